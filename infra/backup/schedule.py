"""The backup schedule as time: which backup is due, and whether the newest is late.

Pure functions of cron expressions (`pg-platform:backup.schedule`, read with
croniter, so every field counts: a monthly full is due once a month, not
every day) and of `pgbackrest info`. The local scheduler
(infra/backup/scheduler.py) and health (infra/health) share them, so the
scheduler never runs what health would not expect, and health never expects
what the scheduler would not run.

One rule joins the three types: a backup covers every smaller type. A full
backup is also this period's diff and incr, and a diff is also an incr; when
two are due in the same minute only the largest runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from infra.errors import ConfigError

ORDER = ("full", "diff", "incr")  # largest first


def _at(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def check(cron: str, key: str = "backup.schedule") -> None:
    """Refuse an expression croniter cannot read, naming the key."""
    if not croniter.is_valid(cron):
        raise ConfigError(f"pg-platform:{key}={cron!r}: not a cron expression of five "
                          "fields (minute hour day-of-month month day-of-week)")


def previous_run(cron: str, now: datetime) -> datetime:
    """The latest time at or before `now` the expression fires."""
    now = _at(now)
    # croniter's get_prev is strictly before its start: start a second later.
    it = croniter(cron, now + timedelta(seconds=1))
    return _at(it.get_prev(datetime))


def next_run(cron: str, after: datetime) -> datetime:
    """The first time strictly after `after` the expression fires."""
    return _at(croniter(cron, _at(after)).get_next(datetime))


def due(schedule: Mapping[str, str], after: datetime, upto: datetime) -> str | None:
    """The largest type that fired in (after, upto], or None: what a scheduler runs now.

    A scheduler that was down (a restart, a long backup) passes the time it last
    looked as `after`, so a missed run happens once, late, rather than never.
    """
    for kind in ORDER:
        cron = schedule.get(kind) or ""
        if cron and next_run(cron, after) <= _at(upto):
            return kind
    return None


def seconds_to_next(schedule: Mapping[str, str], now: datetime) -> float:
    """How long until the next run of any type."""
    times = [next_run(c, now) for c in schedule.values() if c]
    return max((min(times) - _at(now)).total_seconds(), 0.0) if times else 3600.0


@dataclass(frozen=True)
class Freshness:
    """One type's newest backup against its schedule."""

    kind: str
    schedule: str
    age_seconds: float | None        # the newest backup of this very type
    covered_age_seconds: float | None  # the newest of this type or a larger one
    expected_since: str | None       # the scheduled run that should be done by now (UTC)
    late: bool

    def message(self) -> str:
        shown = ("none" if self.covered_age_seconds is None
                 else f"{self.covered_age_seconds / 3600:.1f}h old")
        return (f"no {self.kind} backup (or larger) since the run scheduled for "
                f"{self.expected_since} ({self.schedule!r}); newest: {shown}")


def _stops(backups: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ORDER}
    for b in backups:
        stop = (b.get("timestamp") or {}).get("stop")
        if b.get("type") in out and stop is not None:
            out[str(b["type"])].append(float(stop))
    return out


def freshness(schedule: Mapping[str, str], backups: Iterable[Mapping[str, Any]],
              now: datetime, grace: timedelta) -> list[Freshness]:
    """Each scheduled type: late when the run due `grace` ago left no backup after it.

    The run that counts is the latest one at or before `now - grace`: a run
    that fired a minute ago may still be in progress. A backup covers it when
    it finished after that run was due, whatever its type, if that type is the
    same or larger.
    """
    now = _at(now)
    stops = _stops(backups)
    out = []
    for i, kind in enumerate(ORDER):
        cron = schedule.get(kind) or ""
        if not cron:
            continue
        own = max(stops[kind], default=None)
        covering = max((s for k in ORDER[: i + 1] for s in stops[k]), default=None)
        expected = previous_run(cron, now - grace)
        late = covering is None or covering < expected.timestamp()
        out.append(Freshness(
            kind=kind, schedule=cron,
            age_seconds=None if own is None else max(now.timestamp() - own, 0.0),
            covered_age_seconds=None if covering is None
            else max(now.timestamp() - covering, 0.0),
            expected_since=expected.strftime("%Y-%m-%d %H:%M UTC"), late=late))
    return out


def freshness_from_ages(schedule: Mapping[str, str], ages: Mapping[str, float | None],
                        now: datetime, grace: timedelta) -> list[Freshness]:
    """`freshness` from the age of the newest backup of each type (what health probes)."""
    now = _at(now)
    newest = [{"type": kind, "timestamp": {"stop": now.timestamp() - age}}
              for kind, age in ages.items() if age is not None]
    return freshness(schedule, newest, now, grace)
