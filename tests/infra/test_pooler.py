"""PgBouncer: it listens where configured, answers SHOW POOLS, and guards its auth file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from infra import config
from tests.infra.conftest import admin_dsn, remote, verified
from tests.infra.inventory import Host


def test_pgbouncer_listens_on_the_pooler_address(pooler: Host, outputs: dict[str, Any],
                                                 cfg: config.PlatformConfig) -> None:
    params = conninfo_to_dict(outputs["pooler_dsn"])
    assert int(str(params["port"])) == cfg.pooler.port
    r = remote(pooler)
    # testinfra 10.2's is_listening for a given address misses a 0.0.0.0 listener
    # (it tests a bool for membership), so a wildcard bind, which covers the
    # address (prod's listen_addr), is asked for by itself.
    assert (r.socket(f"tcp://{params['host']}:{params['port']}").is_listening
            or r.socket(f"tcp://0.0.0.0:{params['port']}").is_listening)


def test_show_pools_answers_with_the_app_pool(cfg: config.PlatformConfig,
                                              outputs: dict[str, Any],
                                              passwords: dict[str, str],
                                              ca_file: Path) -> None:
    with psycopg.connect(verified(outputs["pooler_dsn"], ca_file), prepare_threshold=None,
                         autocommit=True, connect_timeout=10) as app:
        assert app.execute("SELECT current_user").fetchone() == (cfg.postgres.app_role,)
        with psycopg.connect(verified(admin_dsn(cfg, outputs, passwords), ca_file),
                             autocommit=True, connect_timeout=10,
                             cursor_factory=psycopg.ClientCursor) as console:
            cur = console.execute("SHOW POOLS")
            names = [d.name for d in cur.description or []]
            pools = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    mine = [p for p in pools if p["database"] == cfg.postgres.database
            and p["user"] == cfg.postgres.app_role]
    assert mine and mine[0]["pool_mode"] == cfg.pooler.pool_mode, pools


def test_userlist_is_0600_and_owned_by_the_service_user(pooler: Host) -> None:
    f = remote(pooler).file(pooler.auth_file)
    assert f.is_file
    assert f.mode == 0o600, oct(f.mode)
    assert f.user == pooler.service_user
    assert "SCRAM-SHA-256$" in f.content_string


def test_pgbouncer_runs_as_the_service_user(pooler: Host) -> None:
    procs = remote(pooler).process.filter(comm="pgbouncer")
    ini = [p for p in procs if pooler.pooler_ini in p.args]
    assert len(ini) == 1, [p.args for p in procs]
    assert ini[0].user == pooler.service_user
