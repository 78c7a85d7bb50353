"""PgBouncer run by the local backend's provider, in front of real servers."""

from __future__ import annotations

import asyncio
import configparser
import stat
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.backends import local
from infra.backends.local_pooler import PoolerProvider
from tests.integration.conftest import MAX_CONNECTIONS, POOL_SIZE, Cluster

CLIENTS = 500


def admin(cluster: Cluster, command: str) -> list[dict[str, Any]]:
    """A console command over the simple query protocol, rows as dicts."""
    with psycopg.connect(cluster.admin_dsn(), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        cur = conn.execute(command)
        if cur.description is None:  # RELOAD, RECONNECT...
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_select_one_through_the_pooler_as_the_app_role(cluster: Cluster) -> None:
    with psycopg.connect(cluster.pooler_dsn(), prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1, current_user").fetchone() == (1, "app")


def test_read_only_entry_is_spread_over_the_replicas(cluster: Cluster) -> None:
    seen = set()
    for _ in range(6):
        with psycopg.connect(cluster.pooler_dsn(f"{cluster.cfg.postgres.database}_ro"),
                             prepare_threshold=None, autocommit=True) as conn:
            in_recovery, addr = conn.execute(
                "SELECT pg_is_in_recovery(), inet_server_addr()::text").fetchone() or (None, None)
            assert in_recovery is True
            seen.add(addr)
        admin(cluster, "RECONNECT")  # new server connections, so round-robin shows
    assert seen == {"127.0.0.2/32", "127.0.0.3/32"}


def test_show_pools_on_the_admin_console_lists_the_pool(cluster: Cluster) -> None:
    with psycopg.connect(cluster.pooler_dsn(), prepare_threshold=None) as conn:
        conn.execute("SELECT 1")
        pools = admin(cluster, "SHOW POOLS")
    pool = [p for p in pools if p["database"] == cluster.cfg.postgres.database
            and p["user"] == cluster.cfg.postgres.app_role]
    assert pool and pool[0]["pool_mode"] == "transaction"


def test_pgbouncer_runs_with_every_rendered_setting(cluster: Cluster) -> None:
    """Parse the rendered ini and compare with what PgBouncer reports it uses."""
    ini = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    ini.read_string(cluster.outs["pooler"]["pgbouncer_ini"])
    running = {row["key"]: str(row["value"]) for row in admin(cluster, "SHOW CONFIG")}
    for key, value in ini["pgbouncer"].items():
        assert running[key] == value, key
    dbs = {row["name"]: row for row in admin(cluster, "SHOW DATABASES")}
    assert dbs["platform"]["port"] == cluster.cfg.postgres.port
    assert dbs["platform_ro"]["host"] == "127.0.0.2,127.0.0.3"


def test_plaintext_passwords_are_refused_and_verifiers_pass_through(cluster: Cluster) -> None:
    """Verifiers only, but for PgBouncer's auth_user, whose password PgBouncer needs to log
    in as it (infra/render/pooler_auth.py): so the file is a 0600 secret file."""
    text = cluster.outs["pooler"]["userlist"]
    for name, secret in cluster.passwords.items():
        if name != "pooler_auth":
            assert secret not in text, name
    plain = [line for line in text.splitlines() if cluster.passwords["pooler_auth"] in line]
    assert plain == [f'"pgbouncer_auth" "{cluster.passwords["pooler_auth"]}"']
    path = Path(cluster.outs["pooler"]["auth_file"])
    assert path.parent.name == "secrets" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.pooler_dsn().replace(cluster.passwords["app"], "wrong"),
                        connect_timeout=5)


async def _client(dsn: str, opened: asyncio.Event, release: asyncio.Event,
                  ready: list[int], done: list[int]) -> int:
    """Connect, wait for all others, query, and stay connected until released."""
    async with await psycopg.AsyncConnection.connect(dsn, prepare_threshold=None,
                                                     autocommit=True) as conn:
        ready.append(1)
        if len(ready) == CLIENTS:
            opened.set()
        await asyncio.wait_for(opened.wait(), 120)
        cur = await conn.execute("SELECT pg_sleep(0.01), 1")
        row = await cur.fetchone()
        done.append(1)
        await asyncio.wait_for(release.wait(), 120)
        return int(row[1]) if row else 0


async def _many(dsn: str, cluster: Cluster) -> tuple[list[int], list[dict[str, Any]]]:
    opened, release = asyncio.Event(), asyncio.Event()
    ready, done = list[int](), list[int]()
    tasks = [asyncio.create_task(_client(dsn, opened, release, ready, done))
             for _ in range(CLIENTS)]
    await asyncio.wait_for(opened.wait(), 120)
    while len(done) < CLIENTS and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    pools = await asyncio.to_thread(admin, cluster, "SHOW POOLS")  # all 500 still connected
    release.set()
    return list(await asyncio.gather(*tasks)), pools


def test_500_concurrent_clients_share_a_small_pool(cluster: Cluster) -> None:
    with psycopg.connect(cluster.owner_dsn(), autocommit=True) as conn:
        max_conn = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
    assert max_conn == MAX_CONNECTIONS < CLIENTS
    started = time.monotonic()
    results, pools = asyncio.run(_many(cluster.pooler_dsn(), cluster))
    elapsed = time.monotonic() - started
    assert results == [1] * CLIENTS
    pool = next(p for p in pools if p["database"] == "platform" and p["user"] == "app")
    assert pool["cl_active"] + pool["cl_waiting"] >= CLIENTS
    assert pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] <= POOL_SIZE
    print(f"{CLIENTS} clients through PgBouncer, pool {POOL_SIZE}, "
          f"max_connections {max_conn}: {elapsed:.1f}s")


def test_a_pooler_setting_change_reloads_without_dropping_clients(cluster: Cluster) -> None:
    provider = PoolerProvider()
    olds = cluster.outs["pooler"]
    changed = cluster.with_settings(pooler={**cluster.settings["pooler"], "default_pool_size": 7,
                                            "query_wait_timeout": 33})
    news = local.pooler_props(changed, cluster.userlist(changed), cluster.tls)
    assert provider.diff("", olds, news).changes
    pid_before = Path(olds["pid_file"]).read_text()
    with psycopg.connect(cluster.pooler_dsn(), prepare_threshold=None,
                         autocommit=True) as client:
        provider.update("", olds, news)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                conf = {r["key"]: r["value"] for r in admin(cluster, "SHOW CONFIG")}
                if conf["default_pool_size"] == "7":
                    break
                time.sleep(0.05)
            assert conf["default_pool_size"] == "7" and conf["query_wait_timeout"] == "33"
            assert client.execute("SELECT 1").fetchone() == (1,)
            assert Path(olds["pid_file"]).read_text() == pid_before
        finally:
            provider.update("", news, olds)
    assert not provider.diff("", olds, local.pooler_props(cluster.cfg, cluster.userlist(),
                                                          cluster.tls)).changes


def test_health_probes_the_read_only_pool_through_pgbouncer(cluster: Cluster) -> None:
    """PgBouncer 1.18 verifies the replicas' certificate against the entry's host list."""
    from infra.health import probes

    assert probes.probe_read_only(cluster.pooler_dsn(), cluster.cfg.postgres.database) == ""
    assert "no such database: nodb_ro" in probes.probe_read_only(cluster.pooler_dsn(), "nodb")
