"""TimescaleDB jobs: each one's last status, and a supervised runner for them.

TimescaleDB's background scheduler runs the policy jobs. On some builds its
job runner is broken while the jobs themselves are fine: 2.28.3 on
PostgreSQL 15.20 fails every background run with ``cannot drop portal ""
while it is being set up`` (a check new in 15.20), and ``CALL run_job(id)``
in an ordinary session succeeds. The runner here detects that condition from
behaviour, never from versions or messages: a job whose last background run
failed is run once in the foreground; when that succeeds, the job is handed
over (``alter_job(scheduled => false)``) and the runner calls it every
``schedule_interval`` from then on. A job that fails in the foreground as
well stays with the scheduler and is reported failed, by name.

``CALL run_job`` does not update ``timescaledb_information.job_stats``, so
every foreground run is recorded in ``public.timescaledb_job_runs``
(schema/V0011); a job's status is the newer of the scheduler's last run and
the runner's. Jobs below id 1000 are TimescaleDB's own housekeeping and are
only reported, never taken over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

logger = logging.getLogger(__name__)

FIRST_USER_JOB = 1000
_LOCK_CLASS = 0x7473  # advisory lock namespace: one runner per job at a time
MODES = ("auto", "scheduler", "supervised")


@dataclass
class JobStatus:
    job_id: int
    name: str  # TimescaleDB's application_name, e.g. "Columnstore Policy [1000]"
    proc: str
    target: str  # the hypertable, or the continuous aggregate a refresh job fills
    scheduled: bool
    schedule_seconds: float
    runner: str  # who ran it last: "scheduler", "pg-platform runner", or "never run"
    last_status: str | None  # "Success", "Failed" or None (never run)
    last_finish: datetime | None
    error: str | None = None
    supervised_started: datetime | None = None
    scheduler_started: datetime | None = None
    running: bool = False  # the scheduler is running it right now

    @property
    def failed(self) -> bool:
        return self.last_status == "Failed"

    def describe(self) -> str:
        where = f" on {self.target}" if self.target else ""
        return f"job {self.job_id} {self.name} ({self.proc}{where})"


@dataclass
class TimescaleJobs:
    """What health shows: presence, then every job."""

    present: bool = False
    version: str | None = None
    jobs: list[JobStatus] = field(default_factory=list)
    error: str | None = None


_STATUS_SQL = """
SELECT j.job_id, j.application_name, j.proc_name,
       coalesce(j.hypertable_schema || '.' || j.hypertable_name, ''),
       j.scheduled, extract(epoch FROM j.schedule_interval)::float8,
       s.last_run_status, s.last_run_started_at, s.last_run_duration,
       coalesce(s.job_status = 'Running', false),
       r.succeeded, r.started_at, r.finished_at, r.message,
       (SELECT e.err_message FROM timescaledb_information.job_errors e
         WHERE e.job_id = j.job_id ORDER BY e.start_time DESC LIMIT 1)
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
LEFT JOIN LATERAL (SELECT succeeded, started_at, finished_at, message
                   FROM public.timescaledb_job_runs x WHERE x.job_id = j.job_id
                   ORDER BY x.started_at DESC LIMIT 1) r ON true
ORDER BY j.job_id
"""


def _status(row: tuple[Any, ...]) -> JobStatus:
    (job_id, name, proc, target, scheduled, every, bg_status, bg_started, bg_duration,
     bg_running, fg_ok, fg_started, fg_finished, fg_message, bg_error) = row
    st = JobStatus(job_id=int(job_id), name=str(name), proc=str(proc), target=str(target),
                   scheduled=bool(scheduled), schedule_seconds=float(every or 0),
                   runner="never run", last_status=None, last_finish=None,
                   supervised_started=fg_started, scheduler_started=bg_started,
                   running=bool(bg_running))
    bg_newer = bg_started is not None and (fg_started is None or bg_started > fg_started)
    if bg_status and bg_newer:
        st.runner, st.last_status = "scheduler", str(bg_status)
        st.last_finish = bg_started + bg_duration if bg_duration is not None else None
        st.error = bg_error if st.failed else None
    elif fg_started is not None:
        st.runner, st.last_status = "pg-platform runner", "Success" if fg_ok else "Failed"
        st.last_finish = fg_finished
        st.error = None if fg_ok else fg_message
    return st


def job_statuses(conn: psycopg.Connection[Any]) -> list[JobStatus]:
    """Every TimescaleDB job in this database; [] where TimescaleDB is not created."""
    row = conn.execute("SELECT to_regclass('public.timescaledb_job_runs') IS NOT NULL, "
                       "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
                       ).fetchone()
    if row is None or not row[1]:
        return []
    if not row[0]:
        raise RuntimeError("public.timescaledb_job_runs is missing: apply sql/ first")
    return [_status(r) for r in conn.execute(_STATUS_SQL).fetchall()]


@dataclass
class RunOutcome:
    job_id: int
    succeeded: bool
    seconds: float
    message: str = ""


def run_foreground(dsn: str, job_id: int) -> RunOutcome | None:
    """``CALL run_job(job_id)`` in its own session, recorded in timescaledb_job_runs.

    Returns None when another runner holds this job's lock (it is running now).
    """
    with psycopg.connect(dsn, autocommit=True,
                         application_name=f"pg-platform job runner [{job_id}]") as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                           (_LOCK_CLASS, job_id)).fetchone()
        if not got or not got[0]:
            return None
        started = time.monotonic()
        start_row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert start_row is not None
        ok, message = True, ""
        try:
            conn.execute("CALL run_job(%s)", (job_id,))
        except psycopg.Error as exc:
            ok = False
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        conn.execute("INSERT INTO public.timescaledb_job_runs "
                     "(job_id, started_at, finished_at, succeeded, message) "
                     "VALUES (%s, %s, clock_timestamp(), %s, %s)",
                     (job_id, start_row[0], ok, message))
        conn.execute("DELETE FROM public.timescaledb_job_runs WHERE job_id = %s "
                     "AND started_at < now() - INTERVAL '30 days'", (job_id,))
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, job_id))
    outcome = RunOutcome(job_id, ok, time.monotonic() - started, message)
    log = logger.info if ok else logger.warning
    log("job %d run in the foreground: %s in %.2fs%s", job_id,
        "succeeded" if ok else "FAILED", outcome.seconds, f" ({message})" if message else "")
    return outcome


def _take_over(dsn: str, st: JobStatus, why: str) -> None:
    logger.warning("%s: %s; pg-platform's runner runs it every %.0fs from now on",
                   st.describe(), why, st.schedule_seconds)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT alter_job(%s, scheduled => false)", (st.job_id,))


def _due(st: JobStatus, now: datetime) -> bool:
    if st.supervised_started is None:
        return True
    return (now - st.supervised_started).total_seconds() >= st.schedule_seconds


def tick(dsn: str, mode: str = "auto") -> list[RunOutcome]:
    """One pass of the runner: detect, take over, and run what is due."""
    if mode not in MODES:
        raise ValueError(f"job runner mode {mode!r}: allowed are {', '.join(MODES)}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        statuses = job_statuses(conn)
        now_row = conn.execute("SELECT now()").fetchone()
    assert now_row is not None
    now: datetime = now_row[0]
    outcomes: list[RunOutcome] = []
    for st in statuses:
        if st.job_id < FIRST_USER_JOB or mode == "scheduler":
            continue
        if st.scheduled:
            if mode == "supervised":
                if st.running:
                    continue  # taken over on the next pass, once this run is done
                _take_over(dsn, st, "pg-platform:timescaledb.job_runner is 'supervised'")
                st.supervised_started = None  # run it now
            elif st.runner == "scheduler" and st.failed and not st.running:
                # A background failure not yet tried in the foreground: try it now
                # (never while the scheduler runs it: the two runs could deadlock).
                out = run_foreground(dsn, st.job_id)
                if out is None:
                    continue
                outcomes.append(out)
                if out.succeeded:
                    _take_over(dsn, st, "its background runs fail (" + (st.error or "no error")
                               + ") while CALL run_job succeeds, so TimescaleDB's job runner "
                               "is broken on this server")
                continue
            else:
                continue
        elif st.supervised_started is None:
            continue  # disabled by someone else, on purpose: not ours to run
        if _due(st, now):
            out = run_foreground(dsn, st.job_id)
            if out is not None:
                outcomes.append(out)
    return outcomes


def run_forever(dsn: str, mode: str, interval: float, stop: threading.Event) -> None:
    """The supervised runner's loop; a failed pass is logged and retried next time."""
    logger.info("TimescaleDB job runner started (mode %s, every %.0fs)", mode, interval)
    while not stop.is_set():
        try:
            tick(dsn, mode)
        except (psycopg.Error, RuntimeError) as exc:
            logger.warning("job runner pass failed: %s", str(exc).strip().splitlines()[0])
        stop.wait(interval)
