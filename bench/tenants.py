"""Tenant benchmark (P3/P3c): 1,000 tenant schemas created and migrated, then a no-op pass.

Prints seconds and per-tenant cost for pg-platform's engine, and the same for
two baselines measured in the same run on the same throw-away server, each in
its own database:

(a) a per-schema loop, as Flyway's docs advise for identical schemas: for each
    tenant, one connection, one history table in that schema, a history
    check, then the tenant track in a transaction and a history row;
(b) the DDL floor: the same statements over two connections in batches of
    tenants per transaction, with no engine around them.

Never asserts on time: these machines are noisy, so the figure that matters
is the ratio against the baselines. Usage::

    .venv/bin/python bench/tenants.py [--tenants 1000] [--workers 4]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.schema import engine  # noqa: E402
from infra.schema.files import Migration, MigrationSet  # noqa: E402
from infra.schema.tenants import TenantSpec, schema_for  # noqa: E402
from tests.support import RunningServer, start_server  # noqa: E402

SQL_DIR = ROOT / "sql"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def new_database(srv: RunningServer, name: str) -> str:
    with psycopg.connect(srv.superuser_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return srv.superuser_dsn(name)


def statements(files: Sequence[Migration], slug: str) -> list[sql.Composed]:
    values = {"app_role": "app", "history_schema": "pgplatform",
              "tenant_schema": schema_for(slug), "tenant_slug": slug, "tenant_verifier": ""}
    return [s.render(values, m.ref) for m in files for s in m.statements]


def baseline_a(dsn: str, files: Sequence[Migration], slugs: Sequence[str]) -> None:
    """One connection and one history table per schema, sequentially."""
    for slug in slugs:
        schema = sql.Identifier(schema_for(slug))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_history (version text PRIMARY KEY, "
                "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(schema))
            done = {r[0] for r in conn.execute(
                sql.SQL("SELECT version FROM {}.schema_history").format(schema))}
            for m in files:
                if m.version in done:
                    continue
                with conn.transaction():
                    for q in statements([m], slug):
                        conn.execute(q)
                    conn.execute(sql.SQL("INSERT INTO {}.schema_history (version, checksum) "
                                         "VALUES (%s, %s)").format(schema),
                                 (m.version, m.checksum))


def baseline_a_noop(dsn: str, slugs: Sequence[str]) -> None:
    for slug in slugs:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SELECT version, checksum FROM {}.schema_history").format(
                sql.Identifier(schema_for(slug)))).fetchall()


def baseline_b(dsn: str, files: Sequence[Migration], slugs: Sequence[str],
               batch: int = 50) -> None:
    """The same DDL over two connections, `batch` tenants per transaction."""
    halves = [slugs[0::2], slugs[1::2]]

    def run(part: Sequence[str]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(0, len(part), batch):
                with conn.transaction():
                    for slug in part[i:i + batch]:
                        conn.execute(sql.SQL("CREATE SCHEMA {}").format(
                            sql.Identifier(schema_for(slug))))
                        for q in statements(files, slug):
                            conn.execute(q)

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def row(label: str, seconds: float, n: int, base: float | None = None) -> str:
    ratio = f"{base / seconds:6.2f}x" if base else "      "
    return f"{label:<52} {seconds:8.3f} s {seconds / n * 1000:9.3f} ms/tenant  {ratio}"


@dataclass(frozen=True)
class TenantTimes:
    """Seconds for each measure over `n` tenants (see the module docstring)."""

    n: int
    workers: int
    engine: float
    noop: float
    survey: float
    a: float
    a_noop: float
    b: float

    @property
    def command(self) -> str:
        return (f".venv/bin/python bench/tenants.py --tenants {self.n} "
                f"--workers {self.workers}")


# The tenant-track files that give each tenant its login role (issue #12); P3b's
# in-run baseline is the same engine run without them and without a tenant key.
TENANT_ROLE_FILES = ("V0002__tenant_role.sql", "V0003__tenant_pooler_login.sql")


def sql_without_tenant_roles(into: Path) -> Path:
    """A copy of sql/ whose tenant track makes schemas but no tenant roles."""
    shutil.copytree(SQL_DIR, into)
    for name in TENANT_ROLE_FILES:
        (into / "tenant" / name).unlink()
    return into


def measure(n: int, workers: int = 4, baselines: bool = True,
            tenant_roles: bool = True) -> TenantTimes:
    """Time the engine (and, with `baselines`, (a) and (b)) on a fresh server.

    `tenant_roles` False runs the engine on sql/ without TENANT_ROLE_FILES and with no
    tenant key: what provisioning cost before each tenant got its own role.
    """
    slugs = [f"t{i:05d}" for i in range(n)]
    tenants = tuple(TenantSpec(s, f"Tenant {s}", "standard") for s in slugs)
    scratch = Path(tempfile.mkdtemp(prefix="pgp-bench-sql-"))
    sql_dir = SQL_DIR if tenant_roles else sql_without_tenant_roles(scratch / "sql")
    try:
        return _measure(n, workers, baselines, tenants, slugs, sql_dir, tenant_roles)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(n: int, workers: int, baselines: bool, tenants: tuple[TenantSpec, ...],
             slugs: list[str], sql_dir: Path, tenant_roles: bool) -> TenantTimes:
    files = MigrationSet.load(sql_dir).tenant
    t_a = t_a_noop = t_b = 0.0

    with start_server() as srv:
        ours = new_database(srv, "bench_engine")
        base_opts = engine.Options(sql_dir=sql_dir, workers=workers)
        engine.apply(ours, base_opts)  # schema + policies tracks, not timed
        # As the platform runs it: every tenant role gets its derived password (issue #12).
        opts = engine.Options(sql_dir=sql_dir, tenants=tenants, workers=workers,
                              tenant_key=secrets.token_urlsafe(32) if tenant_roles else None)
        t_engine = timed(lambda: engine.apply(ours, opts))
        t_noop = timed(lambda: engine.apply(ours, opts))
        t_survey = timed(lambda: engine.plan(ours, opts))
        with psycopg.connect(ours) as conn:
            made: Any = conn.execute("SELECT count(*) FROM pg_namespace "
                                     "WHERE nspname LIKE 'tenant\\_%'").fetchone()
        assert made and made[0] == n, f"expected {n} tenant schemas, found {made}"
        if baselines:
            # The baselines run the tenant track in databases with the schema track
            # applied (untimed), as the engine's does: V0003 writes into its tables.
            a_dsn = new_database(srv, "bench_baseline_a")
            engine.apply(a_dsn, base_opts)
            t_a = timed(lambda: baseline_a(a_dsn, files, slugs))
            t_a_noop = timed(lambda: baseline_a_noop(a_dsn, slugs))
            b_dsn = new_database(srv, "bench_baseline_b")
            engine.apply(b_dsn, base_opts)
            t_b = timed(lambda: baseline_b(b_dsn, files, slugs))
    return TenantTimes(n, workers, t_engine, t_noop, t_survey, t_a, t_a_noop, t_b)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args(argv)
    n = args.tenants
    t = measure(n, args.workers)
    files = MigrationSet.load(SQL_DIR).tenant
    print(f"P3 tenants: {n} tenant schemas, tenant track {[m.script for m in files]}, "
          f"{args.workers} workers; command: {t.command}")
    print(f"{'measure':<52} {'time':>10} {'per tenant':>18}  {'(a)/ours':>7}")
    print(row("pg-platform: register + create + migrate", t.engine, n, t.a))
    print(row("baseline (a): per-schema loop, history per schema", t.a, n))
    print(row("baseline (b): DDL floor, 2 connections, batches of 50", t.b, n))
    print(row("pg-platform: no-op apply (connect + survey)", t.noop, n, t.a_noop))
    print(row("pg-platform: plan only (connect + survey)", t.survey, n))
    print(row("baseline (a): no-op pass, a connection per schema", t.a_noop, n))
    print(f"ratios: provisioning {t.a / t.engine:.2f}x faster than (a) (goal >= 2.5x), "
          f"{t.engine / t.b:.2f}x the DDL floor (b) (goal <= 1.2x); "
          f"no-op apply {t.noop * 1000:.1f} ms (goal <= 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
