"""The health command's look at TimescaleDB: every job's last status.

A failed policy job makes the stack DEGRADED, named: retention, columnstore
or the continuous aggregate's refresh then silently stop, which is how disks
fill and dashboards go stale. A server without TimescaleDB is not a finding.
"""

from __future__ import annotations

import psycopg

from infra.timescaledb.jobs import TimescaleJobs, job_statuses

CONNECT_TIMEOUT = 3


def probe(primary_dsn: str) -> TimescaleJobs:
    out = TimescaleJobs()
    try:
        with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                             application_name="pg-platform health") as conn:
            row = conn.execute("SELECT extversion FROM pg_extension "
                               "WHERE extname = 'timescaledb'").fetchone()
            out.present = row is not None
            out.version = str(row[0]) if row else None
            if out.present:
                out.jobs = job_statuses(conn)
    except (psycopg.Error, RuntimeError) as exc:
        out.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return out


def reasons(ts: TimescaleJobs | None) -> list[tuple[str, str]]:
    """(level, message) pairs; the caller wraps them as Reasons of component timescaledb."""
    if ts is None:
        return []
    if ts.error:
        return [("degraded", f"TimescaleDB job state unknown: {ts.error}")]
    return [("degraded", f"{j.describe()} failed its last run ({j.runner}): "
                         f"{j.error or 'no error text'}")
            for j in ts.jobs if j.failed]


def table_lines(ts: TimescaleJobs | None) -> list[str]:
    if ts is None:
        return []
    out = ["", "timescaledb"]
    if ts.error:
        return [*out, f"  unknown: {ts.error}"]
    if not ts.present:
        return [*out, "  not in this database (fallback: plain events table and views)"]
    out.append(f"  version {ts.version}; {len(ts.jobs)} job(s)")
    for j in ts.jobs:
        when = j.last_finish.isoformat(timespec="seconds") if j.last_finish else "-"
        out.append(f"    {j.job_id} {j.name}: {j.last_status or 'never run'} "
                   f"({j.runner}, {when}){'' if j.scheduled else ' [not scheduled]'}")
    return out

