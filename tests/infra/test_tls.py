"""TLS: every server and the pooler speak it, verified against the platform's own CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import config
from tests.infra.conftest import connect, privileged_stats, stats_dsn, superuser_rows
from tests.infra.inventory import Host


def all_server_dsns(outputs: dict[str, Any]) -> list[str]:
    return [outputs["primary_dsn"], *outputs["replica_dsns"]]


def test_every_server_has_ssl_on_and_verify_full_connects(outputs: dict[str, Any],
                                                          server_dsns: dict[str, str],
                                                          ca_file: Path) -> None:
    """The exported DSNs, and each server itself (behind HAProxy, with Patroni)."""
    for dsn in [*all_server_dsns(outputs), *server_dsns.values()]:
        with connect(dsn, ca_file) as conn:
            assert conn.execute("SHOW ssl").fetchone() == ("on",)
            row = conn.execute("SELECT ssl, version FROM pg_stat_ssl "
                               "WHERE pid = pg_backend_pid()").fetchone()
            assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")


def test_pooler_clients_and_its_server_connections_use_tls(outputs: dict[str, Any],
                                                           ca_file: Path) -> None:
    with connect(outputs["pooler_dsn"], ca_file) as conn:
        # pg_backend_pid() here is the server connection PgBouncer opened for us.
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                           ).fetchone()
    assert row == (True,)


def test_the_exported_dsns_demand_verify_full(outputs: dict[str, Any]) -> None:
    for dsn in [*all_server_dsns(outputs), outputs["pooler_dsn"]]:
        assert conninfo_to_dict(dsn).get("sslmode") == "verify-full"


def test_a_pooler_client_without_tls_is_refused(outputs: dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(make_conninfo(outputs["pooler_dsn"], sslmode="disable"),
                        connect_timeout=10).close()


def test_replication_runs_over_tls(cfg: config.PlatformConfig, primary: Host,
                                   outputs: dict[str, Any], ca_file: Path) -> None:
    sql = ("SELECT r.application_name, s.ssl FROM pg_stat_replication r "
           "JOIN pg_stat_ssl s USING (pid)")
    if privileged_stats(outputs):
        with connect(stats_dsn(outputs), ca_file) as conn:
            rows = [tuple(r) for r in conn.execute(sql).fetchall()]
    else:   # pg_monitor's view; prod's is the superuser's, by peer on the host
        rows = [(r["application_name"], r["ssl"])
                for r in superuser_rows(primary, cfg, outputs, ca_file, sql)]
    assert len(rows) == cfg.replicas and all(r[1] for r in rows), rows


def test_a_client_trusting_another_ca_is_refused(outputs: dict[str, Any],
                                                 tmp_path: Path) -> None:
    from infra import tls

    other = tmp_path / "other.crt"
    other.write_text(tls.make_ca("not the platform").cert_pem)
    for target in ("primary_dsn", "pooler_dsn"):
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(make_conninfo(outputs[target], sslmode="verify-full",
                                          sslrootcert=str(other)), connect_timeout=10).close()
