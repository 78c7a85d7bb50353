"""TimescaleDB settings: the shape of `public.events` and who runs its policy jobs.

They live under `pg-platform:timescaledb`. The defaults are the seeds' shape:
1-day chunks, columnstore (compression) segmented by tenant after 7 days,
90 days' retention, and an hourly continuous aggregate refreshed every hour
over the last 3 days. `pulumi up` brings the database's policies to these
values in place (infra/timescaledb/resource.py); where TimescaleDB is absent
they are accepted and unused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.config.section import Section
from infra.errors import ConfigError

_INTERVAL = re.compile(r"^([1-9][0-9]{0,5}) (minute|hour|day|week)s?$")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
JOB_RUNNERS = ("auto", "scheduler", "supervised")


def interval_seconds(text: str) -> int:
    m = _INTERVAL.match(text)
    if not m:
        raise ConfigError(f"{text!r} is not an interval such as '7 days'")
    return int(m.group(1)) * _SECONDS[m.group(2)]


@dataclass(frozen=True)
class TimescaleSettings:
    """Intervals are PostgreSQL interval texts (`'7 days'`), validated by `_interval`.

    job_runner: `scheduler` leaves jobs to TimescaleDB's background scheduler;
    `supervised` has pg-platform's runner `CALL run_job` them instead; `auto`
    (the default) uses the scheduler and hands a job to the runner when its
    background runs fail while the same job succeeds in the foreground (a
    broken job runner, like 2.28.3's on PostgreSQL 15.20).
    """

    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retention: str = "90 days"
    refresh_start: str = "3 days"
    refresh_end: str = "1 hour"
    refresh_every: str = "1 hour"
    job_runner: str = "auto"

    def policy_inputs(self) -> dict[str, str]:
        """What the policy resource diffs and applies; job_runner is not a policy."""
        return {"chunk_interval": self.chunk_interval, "compress_after": self.compress_after,
                "retention": self.retention, "refresh_start": self.refresh_start,
                "refresh_end": self.refresh_end, "refresh_every": self.refresh_every}


def _interval(sec: Section, name: str, default: str) -> str:
    value = sec.get(name, default)
    if not isinstance(value, str) or not _INTERVAL.match(value.strip()):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected an interval such as "
                          "'7 days': a whole number and minute(s), hour(s), day(s) or week(s)")
    return value.strip()


def parse_timescaledb(sec: Section) -> TimescaleSettings:
    d = TimescaleSettings()
    s = TimescaleSettings(
        chunk_interval=_interval(sec, "chunk_interval", d.chunk_interval),
        compress_after=_interval(sec, "compress_after", d.compress_after),
        retention=_interval(sec, "retention", d.retention),
        refresh_start=_interval(sec, "refresh_start", d.refresh_start),
        refresh_end=_interval(sec, "refresh_end", d.refresh_end),
        refresh_every=_interval(sec, "refresh_every", d.refresh_every),
        job_runner=sec.choice("job_runner", d.job_runner, JOB_RUNNERS),
    )
    sec.finish()
    if interval_seconds(s.compress_after) >= interval_seconds(s.retention):
        raise ConfigError(f"{sec.where('compress_after')}={s.compress_after!r} must be "
                          f"shorter than {sec.where('retention')}={s.retention!r}: chunks "
                          "are dropped before they would be compressed")
    if interval_seconds(s.refresh_end) >= interval_seconds(s.refresh_start):
        raise ConfigError(f"{sec.where('refresh_end')}={s.refresh_end!r} must be shorter "
                          f"than {sec.where('refresh_start')}={s.refresh_start!r}: the "
                          "refresh window runs from start to end ago")
    if interval_seconds(s.refresh_start) - interval_seconds(s.refresh_end) < 2 * 3600:
        raise ConfigError(f"{sec.where('refresh_start')}={s.refresh_start!r}: the refresh "
                          "window must cover at least two hourly buckets")
    return s
