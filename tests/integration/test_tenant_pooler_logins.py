"""PgBouncer accepts logins from 1,000 tenant clients, each its own role and pool.

Real processes: the session's cluster (PostgreSQL with max_connections 50,
PgBouncer in transaction mode, TLS). 1,000 tenants are made by the engine with
their roles and derived passwords; PgBouncer looks each up through its
auth_user (the auth file lists none of them); then 1,000 clients, one per
tenant, connect at once through PgBouncer and each asks which tenant it is.
PgBouncer keeps the server side within max_db_connections by closing idle
connections of other pools. Each client is a file descriptor: PgBouncer runs
with its soft open-files limit lifted to the hard one (infra/hostctl/pgbouncer.py),
which must leave room for max_client_conn plus the server connections.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.backends import local
from infra.backends.local_pooler import PoolerProvider
from infra.dsn import conninfo
from infra.schema import credentials, engine
from tests.integration.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]
TENANTS = 1000
SLUGS = [f"pl{i:04d}" for i in range(TENANTS)]


@pytest.fixture(scope="module")
def many(cluster: Cluster) -> Iterator[dict[str, str]]:
    tenants = [{"slug": s, "name": s, "plan": "standard"} for s in SLUGS]
    opts = engine.Options.build(ROOT / "sql", tenants, app_role=cluster.cfg.postgres.app_role,
                                tenant_key=cluster.passwords["tenant_key"],
                                tenant_quota=TENANTS + 100, workers=2)
    engine.apply(cluster.owner_dsn(), opts)
    cfg = cluster.with_settings(tenants=tenants, pooler={
        **cluster.settings["pooler"], "max_client_conn": TENANTS + 100,
        "max_db_connections": 30})
    olds = cluster.outs["pooler"]
    news = local.pooler_props(cfg, cluster.userlist(cfg), cluster.tls)
    cluster.outs["pooler"] = dict(PoolerProvider().update("", olds, news).outs or {})
    with psycopg.connect(cluster.owner_dsn(), autocommit=True) as conn:
        ids = {str(r[0]): str(r[1]) for r in conn.execute(
            "SELECT slug, id FROM public.tenants WHERE slug LIKE 'pl%'")}
    try:
        yield ids
    finally:  # the session's pooler as the other modules expect it
        PoolerProvider().update("", cluster.outs["pooler"], olds)
        cluster.outs["pooler"] = olds


async def _login(dsn: str, gate: asyncio.Event) -> str:
    await gate.wait()
    for attempt in range(3):
        try:
            async with await psycopg.AsyncConnection.connect(
                    dsn, prepare_threshold=None, autocommit=True, connect_timeout=120) as conn:
                cur = await conn.execute("SELECT public.current_tenant_id()::text")
                row = await cur.fetchone()
                return str(row[0]) if row else ""
        except psycopg.OperationalError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    return ""


async def _all(dsns: list[str]) -> list[Any]:
    gate = asyncio.Event()
    tasks = [asyncio.create_task(_login(d, gate)) for d in dsns]
    gate.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def test_1000_tenant_clients_log_in_through_pgbouncer(cluster: Cluster,
                                                       many: dict[str, str]) -> None:
    ca = cluster.tls.ca_file if cluster.tls else ""
    dsns = [conninfo(credentials.dsn(cluster.pooler_dsn(), cluster.passwords["tenant_key"], s),
                     sslmode="verify-full", sslrootcert=ca) for s in SLUGS]
    started = time.monotonic()
    results = asyncio.run(_all(dsns))
    elapsed = time.monotonic() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {TENANTS} logins failed, first: {failures[0]!r}"
    assert results == [many[s] for s in SLUGS]  # each client is its own tenant
    # No tenant in the auth file: all 1,000 came through auth_query.
    listed = Path(cluster.outs["pooler"]["auth_file"]).read_text().splitlines()
    assert not [u for u in listed if u.startswith('"tenant_pl')]
    pid = int(Path(cluster.outs["pooler"]["pid_file"]).read_text().split()[0])
    limits = Path(f"/proc/{pid}/limits").read_text()
    soft = int(re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert soft >= TENANTS + 100 + 30 + 10, limits  # max_client_conn + max_db_connections
    print(f"{TENANTS} tenant clients (one role and pool each) through PgBouncer: "
          f"{elapsed:.1f}s")
