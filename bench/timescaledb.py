"""TimescaleDB benchmark (P8): a tenant's 7-day hourly roll-up, aggregate vs raw rows.

On a throw-away server with TimescaleDB preloaded and the platform's sql/
applied: 10 days of events for 3 tenants (one row every `every` seconds per
tenant), the columnstore policy job run (chunks older than 7 days
compressed), the continuous aggregate refreshed. Then, as the tenant's own
login role, the same answer two ways, timed in the same run:

- pg-platform: `tenant_events_hourly` (the continuous aggregate, through the
  security-barrier view);
- baseline: `time_bucket` + GROUP BY over `tenant_events` (the raw rows,
  through the same isolation).

Also reports the compression ratio the columnstore reached on the data.
Never asserts on time. Usage::

    .venv/bin/python -m bench.timescaledb [--every 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Figure, median, report, timed, x  # noqa: E402
from infra.schema import engine  # noqa: E402
from tests.support import fresh_database, start_server  # noqa: E402
from tests.tenant_roles import ensure_tenant_roles, query  # noqa: E402
from tests.timescale import ensure_installed  # noqa: E402

SLUGS = ("acme", "globex", "initech")
# The last 7 whole hours' days: the same window both ways, on bucket boundaries.
_WINDOW = ("date_trunc('hour', now() - INTERVAL '7 days') AND {col} < date_trunc('hour', now())")
AGGREGATE = ("SELECT bucket, kind, events, avg_value, max_value FROM tenant_events_hourly "
             "WHERE bucket >= " + _WINDOW.format(col="bucket") + " ORDER BY bucket, kind")
RAW = ("SELECT time_bucket(INTERVAL '1 hour', occurred_at) AS bucket, kind, count(*), "
       "avg(value), max(value) FROM tenant_events WHERE occurred_at >= "
       + _WINDOW.format(col="occurred_at") + " GROUP BY 1, 2 ORDER BY 1, 2")
COMMAND = ".venv/bin/python -m bench.timescaledb"


def _autocommit(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def run(every: int = 10, repeats: int = 7) -> list[Figure]:
    ensure_installed()
    with start_server(timescaledb=True) as srv, fresh_database(srv) as db:
        engine.apply(db.dsn, engine.Options.build(
            ROOT / "sql", [{"slug": s, "name": s, "plan": "standard"} for s in SLUGS]))
        for (jid,) in query(db.dsn, "SELECT job_id FROM timescaledb_information.jobs "
                                    "WHERE job_id >= 1000"):
            query(db.dsn, "SELECT alter_job(%s, scheduled => false)", (jid,))
        query(db.dsn, """
            INSERT INTO events (tenant_id, occurred_at, kind, value)
            SELECT t.id, g, (ARRAY['click', 'view', 'buy'])[1 + (extract(second FROM g)::int %% 3)],
                   random() * 100
            FROM tenants t,
                 generate_series(now() - INTERVAL '10 days', now(), make_interval(secs => %s)) g
            """, (every,))
        rows = query(db.dsn, "SELECT count(*) FROM events")[0][0]
        job = query(db.dsn, "SELECT job_id FROM timescaledb_information.jobs "
                            "WHERE proc_name = 'policy_compression'")[0][0]
        _autocommit(db.dsn, f"CALL run_job({int(job)})")
        before, after, chunks = query(db.dsn, """
            SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes),
                   count(*) FROM chunk_compression_stats('public.events')
            WHERE compression_status = 'Compressed'""")[0]
        _autocommit(db.dsn, "CALL refresh_continuous_aggregate('public.events_hourly', "
                            "NULL, NULL)")
        _autocommit(db.dsn, "VACUUM ANALYZE")
        pw = ensure_tenant_roles(db.dsn, "app", ["acme"])
        tenant = srv.server.dsn("tenant_acme", pw["tenant_acme"], db.name)
        with psycopg.connect(tenant) as conn:
            agg_rows = conn.execute(AGGREGATE).fetchall()  # warm both once
            raw_rows = conn.execute(RAW).fetchall()
            agg = median([timed(lambda: conn.execute(AGGREGATE).fetchall())[0]
                          for _ in range(repeats)])
            raw = median([timed(lambda: conn.execute(RAW).fetchall())[0]
                          for _ in range(repeats)])
    same = [r[:3] for r in agg_rows] == [r[:3] for r in raw_rows]
    ratio = float(before) / float(after)
    return [
        report(Figure("P8a", f"tenant's 7-day hourly roll-up ({len(agg_rows)} rows of "
                             f"{rows // len(SLUGS)} raw), median of {repeats}",
                      f"{agg * 1000:.2f} ms (aggregate)", f"{raw * 1000:.2f} ms (raw rows)",
                      x(raw / agg), "aggregate faster (>1×)", raw > agg,
                      commands=(COMMAND, AGGREGATE, RAW),
                      note="same buckets and counts both ways" if same else
                      "the two answers DIFFER in buckets or counts")),
        report(Figure("P8b", f"columnstore on 10 days of 3 tenants ({chunks} chunks "
                             "older than 7 days)", f"{int(after) // 1024} KiB",
                      f"{int(before) // 1024} KiB uncompressed", x(ratio), "context", None,
                      commands=(COMMAND,))),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--every", type=int, default=10, help="seconds between a tenant's rows")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    run(args.every, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
