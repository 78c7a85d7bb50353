"""The backup schedule as time: what the scheduler runs, and what health calls late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.backup import hot_standby, schedule
from infra.config import MonitoringSettings
from infra.errors import ConfigError
from infra.health.model import DEGRADED, Backups, Report
from infra.health.verdict import evaluate

DEFAULT = {"full": "0 1 * * 0", "diff": "0 1 * * 1-6", "incr": "0 */4 * * *"}
GRACE = timedelta(hours=6)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_due_picks_the_largest_type_that_fired() -> None:
    # Sunday 2026-11-29 01:00: the full fires; the 00:00 incr fired before `after`.
    assert schedule.due(DEFAULT, at("2026-11-29 00:30"), at("2026-11-29 01:00")) == "full"
    assert schedule.due(DEFAULT, at("2026-11-30 00:59"), at("2026-11-30 01:00:30")) == "diff"
    assert schedule.due(DEFAULT, at("2026-11-30 03:59"), at("2026-11-30 04:00")) == "incr"
    assert schedule.due(DEFAULT, at("2026-11-30 04:00"), at("2026-11-30 07:59")) is None
    # A full and an incr in the same minute: one backup, the full (it covers the incr).
    both = {"full": "0 0 * * *", "diff": "", "incr": "0 * * * *"}
    assert schedule.due(both, at("2026-11-30 23:59"), at("2026-12-01 00:00")) == "full"


def test_a_run_missed_while_stopped_happens_once_when_back() -> None:
    # Stopped from 00:50 to 05:10 on Monday: the 01:00 diff and the 04:00 incr were missed.
    assert schedule.due(DEFAULT, at("2026-11-30 00:50"), at("2026-11-30 05:10")) == "diff"
    # Looking from now on, nothing else is owed until 08:00.
    assert schedule.due(DEFAULT, at("2026-11-30 05:10"), at("2026-11-30 07:00")) is None
    assert schedule.seconds_to_next(DEFAULT, at("2026-11-30 07:00")) == 3600


def test_every_minute() -> None:
    every = {"full": "", "diff": "", "incr": "* * * * *"}
    assert schedule.due(every, at("2026-12-01 10:00:05"), at("2026-12-01 10:00:59")) is None
    assert schedule.due(every, at("2026-12-01 10:00:05"), at("2026-12-01 10:01:00")) == "incr"
    assert schedule.seconds_to_next(every, at("2026-12-01 10:00:05")) == 55


@pytest.mark.parametrize("bad", ["61 25 * * *", "*/0 * * * *", "0 1 * *", "0 1 32 * *",
                                 "0 1 * 13 *", "bananas"])
def test_unreadable_expressions_are_refused_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"pg-platform:backup\.schedule\.incr="):
        schedule.check(bad, "backup.schedule.incr")


def backup(kind: str, stop: datetime) -> dict[str, object]:
    return {"type": kind, "timestamp": {"start": stop.timestamp() - 60,
                                        "stop": stop.timestamp()}}


def late(sched: dict[str, str], backups: list[dict[str, object]], now: datetime) -> dict[str,
                                                                                        bool]:
    return {f.kind: f.late for f in schedule.freshness(sched, backups, now, GRACE)}


def test_a_monthly_full_is_not_late_two_days_after_it_ran() -> None:
    monthly = {"full": "0 1 1 * *", "diff": "", "incr": ""}
    ran = [backup("full", at("2026-11-01 01:20"))]
    assert late(monthly, ran, at("2026-11-03 09:00")) == {"full": False}
    assert late(monthly, ran, at("2026-11-30 23:00")) == {"full": False}
    # December's run was due at 01:00 on the 1st; past the grace, it is late.
    assert late(monthly, ran, at("2026-12-01 06:59")) == {"full": False}
    assert late(monthly, ran, at("2026-12-01 07:01")) == {"full": True}


def test_the_month_field_counts() -> None:
    # Daily, in January only: in March the newest full from 31 January is on time.
    january = {"full": "0 1 * 1 *", "diff": "", "incr": ""}
    assert late(january, [backup("full", at("2026-01-31 01:10"))],
                at("2026-03-15 12:00")) == {"full": False}
    assert late(january, [backup("full", at("2026-01-30 01:10"))],
                at("2026-03-15 12:00")) == {"full": True}
    # Quarterly: not late 80 days on, late once April's run is due.
    quarterly = {"full": "0 2 1 1,4,7,10 *", "diff": "", "incr": ""}
    ran = [backup("full", at("2026-01-01 02:30"))]
    assert late(quarterly, ran, at("2026-03-22 00:00")) == {"full": False}
    assert late(quarterly, ran, at("2026-04-01 09:00")) == {"full": True}


def test_a_larger_backup_covers_a_smaller_type() -> None:
    now = at("2026-11-30 13:00")  # Monday; incr due at 04:00 (6h grace: the 04:00 one)
    fresh_full = [backup("full", at("2026-11-30 05:00"))]
    assert late(DEFAULT, fresh_full, now) == {"full": False, "diff": False, "incr": False}
    # An incr never covers a diff or a full.
    stale = [backup("full", at("2026-11-22 01:30")), backup("incr", at("2026-11-30 12:00"))]
    assert late(DEFAULT, stale, now) == {"full": True, "diff": True, "incr": False}


def report(ages: dict[str, float | None]) -> Report:
    return Report(stack="t", backups=Backups(available=True, age_seconds=ages,
                                             archive_failed_count=0))


def test_health_judges_each_type_against_its_schedule() -> None:
    mon = MonitoringSettings()
    monthly = {"full": "0 1 1 * *", "diff": "0 1 * * *", "incr": "0 * * * *"}
    now = at("2026-12-03 09:30")
    day = 86400.0
    ok = evaluate(report({"full": 2 * day + 8 * 3600, "diff": 8 * 3600, "incr": 1200}),
                  mon, 31 * 24 * 3600, schedule=monthly, now=now)
    backup_reasons = [r for r in ok.reasons if r.component == "backups"]
    assert backup_reasons == [] and ok.backups.late == {"full": False, "diff": False,
                                                        "incr": False}
    # The incr scheduler stopped 9 hours ago: incr is late, and only incr.
    bad = evaluate(report({"full": 2 * day + 8 * 3600, "diff": 8 * 3600 + 60,
                           "incr": 9 * 3600}), mon, 31 * 24 * 3600, schedule=monthly, now=now)
    msgs = [r for r in bad.reasons if r.component == "backups"]
    assert [r.level for r in msgs] == [DEGRADED]
    assert "no incr backup (or larger) since the run scheduled for 2026-12-03 03:00 UTC" \
        in msgs[0].message
    assert bad.backups.late == {"full": False, "diff": False, "incr": True}


def test_an_explicit_full_age_limit_still_applies_to_the_full() -> None:
    mon = MonitoringSettings(full_backup_max_age_hours=24)
    r = evaluate(report({"full": 2 * 86400.0, "diff": None, "incr": None}), mon, 24 * 3600,
                 schedule={"full": "0 1 1 * *", "diff": "", "incr": ""},
                 now=at("2026-12-03 09:30"))
    assert [r.message for r in r.reasons if r.component == "backups"] == [
        "newest full backup is 48.0h old; the schedule allows 24.0h"]


CONTROLDATA = """pg_control version number:            1300
Database cluster state:               shut down in recovery
max_connections setting:              40
max_worker_processes setting:         8
max_wal_senders setting:              10
max_prepared_xacts setting:           0
max_locks_per_xact setting:           64
track_commit_timestamp setting:       on
"""
# PostgreSQL 15's own words (xlogrecovery.c), as they reach the copy's log.
PAUSED_LOG = """2026-12-01 11:20:01.1 UTC [77] WARNING:  hot standby is not possible because of \
insufficient parameter settings
2026-12-01 11:20:01.1 UTC [77] DETAIL:  max_connections = 60 is a lower setting than on the \
primary server, where its value was 90.
2026-12-01 11:20:01.1 UTC [77] LOG:  recovery has paused
"""


def test_hot_standby_settings_from_controldata_primary_and_log() -> None:
    backup_values = hot_standby.parse_controldata(CONTROLDATA)
    assert backup_values == {"max_connections": 40, "max_worker_processes": 8,
                             "max_wal_senders": 10, "max_prepared_transactions": 0,
                             "max_locks_per_transaction": 64}
    merged = hot_standby.merged(backup_values, {"max_connections": 60,
                                                "max_locks_per_transaction": 32})
    assert merged["max_connections"] == 60 and merged["max_locks_per_transaction"] == 64
    assert hot_standby.paused_for_parameters(PAUSED_LOG)
    assert hot_standby.raised_by_log(PAUSED_LOG, merged) == {"max_connections": 90}
    assert hot_standby.raised_by_log(PAUSED_LOG, {**merged, "max_connections": 90}) == {}
    text = hot_standby.settings_text({**merged, "max_connections": 90})
    assert "max_connections = 90\n" in text and "max_prepared_transactions = 0\n" in text


def test_the_health_table_says_which_run_each_type_covers_or_misses() -> None:
    from infra.health.cli import table

    r = evaluate(report({"full": 2 * 86400.0, "diff": None, "incr": 9 * 3600.0}),
                 MonitoringSettings(), 31 * 24 * 3600,
                 schedule={"full": "0 1 1 * *", "diff": "", "incr": "0 * * * *"},
                 now=at("2026-12-03 09:30"))
    lines = table(r).splitlines()
    assert any(line.startswith("  last full: ") and
               line.endswith("covers the run of 2026-12-01 01:00 UTC") for line in lines), lines
    assert any(line.startswith("  last incr: ") and
               line.endswith("LATE for the run of 2026-12-03 03:00 UTC") for line in lines)
    assert not any("last diff:" in line and "run of" in line for line in lines)
