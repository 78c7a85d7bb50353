"""The restore drill: prove that a point-in-time restore keeps exactly what it should.

Marker rows are written one transaction each, in two groups with a pause
between. Their real commit timestamps (track_commit_timestamp, the very
timestamps recovery compares with recovery_target_time) decide the target T:
the middle of the pause. After restoring to T, every row committed at or
before T must be present and every row committed after T absent.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from infra.backup import restore as restore_mod
from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.pgbackrest import PgBackRest

logger = logging.getLogger(__name__)

DRILL_DB = "pgp_drill"
_TABLE = """CREATE TABLE IF NOT EXISTS markers (
    id bigserial PRIMARY KEY,
    run text NOT NULL,
    grp text NOT NULL,
    n int NOT NULL
)"""


@dataclass(frozen=True)
class DrillReport:
    run: str
    target: str
    committed_before: int
    present_before: int
    committed_after: int
    present_after: int
    restore_seconds: float

    @property
    def lost(self) -> int:
        return self.committed_before - self.present_before

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.present_after == 0
                and self.committed_before > 0 and self.committed_after > 0)

    def lines(self) -> list[str]:
        return [
            f"drill run {self.run}: restore target T = {self.target}",
            f"rows committed <= T: {self.committed_before}, present after restore: "
            f"{self.present_before}, lost: {self.lost}",
            f"rows committed >  T: {self.committed_after}, present after restore: "
            f"{self.present_after} (extra), absent: "
            f"{self.committed_after - self.present_after}",
            f"restore + recovery took {self.restore_seconds:.1f}s",
            "drill PASSED: 0 lost, 0 extra" if self.ok else
            f"drill FAILED: {self.lost} lost, {self.present_after} extra",
        ]


def with_db(dsn: str, dbname: str, **extra: str | int) -> str:
    return conninfo(dsn, dbname=dbname, **extra)


def _prepare(primary_dsn: str) -> None:
    with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_setting('track_commit_timestamp')").fetchone()
        if not row or row[0] != "on":
            raise ProcessError("the drill needs track_commit_timestamp = on on the primary "
                               "(pg-platform renders it; restart the primary if it is new)")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (DRILL_DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {DRILL_DB}")
    with psycopg.connect(with_db(primary_dsn, DRILL_DB), autocommit=True) as conn:
        conn.execute(_TABLE)


def write_markers(primary_dsn: str, run: str, rows: int,
                  pause: float) -> tuple[list[tuple[int, datetime]], list[tuple[int, datetime]]]:
    """Two groups of `rows` committed rows; returns (id, commit timestamp) per group."""
    _prepare(primary_dsn)
    groups: dict[str, list[int]] = {"before": [], "after": []}
    with psycopg.connect(with_db(primary_dsn, DRILL_DB), autocommit=True) as conn:
        for grp in ("before", "after"):
            for n in range(rows):
                row = conn.execute("INSERT INTO markers (run, grp, n) VALUES (%s, %s, %s) "
                                   "RETURNING id", (run, grp, n)).fetchone()
                groups[grp].append(int(row[0]) if row else -1)
                time.sleep(0.005)
            if grp == "before":
                time.sleep(pause)
        stamped: dict[int, datetime | None] = dict(conn.execute(
            "SELECT id, pg_xact_commit_timestamp(xmin) FROM markers WHERE run = %s",
            (run,)).fetchall())
    if any(ts is None for ts in stamped.values()):
        raise ProcessError("some marker rows have no commit timestamp; "
                           "was track_commit_timestamp switched on after they were written?")
    stamps = {i: ts for i, ts in stamped.items() if ts is not None}
    return ([(i, stamps[i]) for i in groups["before"]],
            [(i, stamps[i]) for i in groups["after"]])


def present_ids(dsn: str, run: str) -> set[int]:
    with psycopg.connect(with_db(dsn, DRILL_DB), autocommit=True) as conn:
        return {int(r[0]) for r in conn.execute("SELECT id FROM markers WHERE run = %s",
                                                (run,)).fetchall()}


def run_drill(pgbr: PgBackRest, primary_dsn: str, restores_dir: Path, *,
              rows: int = 25, pause: float = 0.5, keep: bool = False) -> DrillReport:
    """Write markers, restore to T in a new data dir, count, and (unless keep) clean up."""
    run = uuid.uuid4().hex[:12]
    before, after = write_markers(primary_dsn, run, rows, pause)
    last_before = max(ts for _, ts in before)
    first_after = min(ts for _, ts in after)
    if not last_before < first_after:
        raise ProcessError("marker groups overlap in commit time; cannot pick T between them")
    target_time = last_before + (first_after - last_before) / 2
    target = restore_mod.format_target(target_time)
    all_rows = before + after
    committed_before = {i for i, ts in all_rows if ts <= target_time}
    committed_after = {i for i, ts in all_rows if ts > target_time}
    # Push the WAL holding the later rows into the repository, so recovery can pass T.
    pgbr.check()
    logger.info("drill %s: restoring to %s", run, target)
    started = time.monotonic()
    workdir = restore_mod.new_workdir(restores_dir)
    # A failed restore removes its copy itself; a failed check afterwards does it here.
    restored = restore_mod.restore(pgbr, workdir, target=target, primary_dsn=primary_dsn)
    done = False
    try:
        copy_dsn = restored.local_dsn(primary_dsn)
        restore_mod.wait_promoted(restored, copy_dsn)
        seconds = time.monotonic() - started
        present = present_ids(copy_dsn, run)
        done = True
    finally:
        if not (keep and done):
            restored.remove()
    return DrillReport(run=run, target=target,
                       committed_before=len(committed_before),
                       present_before=len(committed_before & present),
                       committed_after=len(committed_after),
                       present_after=len(committed_after & present),
                       restore_seconds=seconds)
