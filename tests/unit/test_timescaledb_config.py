"""pg-platform:timescaledb settings and what the renderers make of TimescaleDB."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config, render
from infra.errors import ConfigError
from infra.health.model import Report
from infra.health.verdict import evaluate
from infra.timescaledb import health
from infra.timescaledb.jobs import JobStatus, TimescaleJobs

PATHS = render.HostPaths(data_dir="/d", socket_dir="/s")


def load(ts: dict[str, Any]) -> config.PlatformConfig:
    return config.load({"timescaledb": ts}, "t")


def test_defaults_are_the_seeds_shape() -> None:
    s = config.load({}, "t").timescaledb
    assert s.policy_inputs() == {"chunk_interval": "1 day", "compress_after": "7 days",
                                 "retention": "90 days", "refresh_start": "3 days",
                                 "refresh_end": "1 hour", "refresh_every": "1 hour"}
    assert s.job_runner == "auto"


@pytest.mark.parametrize(("ts", "message"), [
    ({"retention": "ninety days"}, "pg-platform:timescaledb.retention='ninety days': expected "
                                   "an interval such as '7 days'"),
    ({"retention": 90}, "pg-platform:timescaledb.retention=90: expected an interval"),
    ({"retention": "7 days"}, "pg-platform:timescaledb.compress_after='7 days' must be shorter "
                              "than pg-platform:timescaledb.retention='7 days'"),
    ({"refresh_start": "1 hour"}, "pg-platform:timescaledb.refresh_end='1 hour' must be "
                                  "shorter than pg-platform:timescaledb.refresh_start='1 hour'"),
    ({"refresh_start": "2 hours"}, "must cover at least two hourly buckets"),
    ({"job_runner": "cron"}, "pg-platform:timescaledb.job_runner='cron': allowed values are "
                             "auto, scheduler, supervised"),
    ({"retension": "9 days"}, "pg-platform:timescaledb.retension: unknown setting"),
    ({"chunk_interval": "0 days"}, "pg-platform:timescaledb.chunk_interval='0 days'"),
])
def test_bad_settings_name_the_key_the_value_and_what_is_allowed(ts: dict[str, Any],
                                                                 message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(ts)
    assert message in str(err.value)


def test_changed_policies_are_accepted() -> None:
    s = load({"retention": "30 days", "compress_after": "2 weeks", "chunk_interval": "6 hours",
              "job_runner": "supervised"}).timescaledb
    assert (s.retention, s.compress_after, s.chunk_interval, s.job_runner) == \
        ("30 days", "2 weeks", "6 hours", "supervised")


def test_postgresql_conf_preloads_timescaledb_with_telemetry_off_only_when_present() -> None:
    cfg = config.load({}, "t")
    with_ts = render.postgresql_conf(cfg, PATHS, timescaledb=True)
    without = render.postgresql_conf(cfg, PATHS, timescaledb=False)
    assert "shared_preload_libraries = 'pg_stat_statements,timescaledb'" in with_ts
    assert "timescaledb.telemetry_level = 'off'" in with_ts
    assert "timescaledb" not in without.split("shared_preload_libraries", 1)[1]


def job(**kw: Any) -> JobStatus:
    base: dict[str, Any] = dict(job_id=1001, name="Retention Policy [1001]",
                                proc="policy_retention", target="public.events",
                                scheduled=True, schedule_seconds=86400.0, runner="scheduler",
                                last_status="Success", last_finish=None)
    base.update(kw)
    return JobStatus(**base)


def test_a_failed_job_makes_the_verdict_degraded_and_names_it() -> None:
    from infra.health.model import Backups, Schema

    def verdict(ts: TimescaleJobs | None) -> Report:
        r = Report(stack="t", backups=Backups(available=True, age_seconds={"full": 1.0}),
                   schema=Schema(available=True), timescaledb=ts)
        return evaluate(r, config.load({}, "t").monitoring, 86400)

    assert verdict(None).status == "healthy"
    assert verdict(TimescaleJobs(present=False)).status == "healthy"
    assert verdict(TimescaleJobs(present=True, jobs=[job()])).status == "healthy"
    bad = verdict(TimescaleJobs(present=True, jobs=[
        job(), job(job_id=1002, name="Columnstore Policy [1002]", proc="policy_compression",
                   last_status="Failed", error="deadlock detected")]))
    assert bad.status == "degraded"
    assert [str(r) for r in bad.reasons] == [
        "degraded: timescaledb: job 1002 Columnstore Policy [1002] (policy_compression on "
        "public.events) failed its last run (scheduler): deadlock detected"]
    unknown = verdict(TimescaleJobs(error="connection refused"))
    assert unknown.status == "degraded" and "connection refused" in unknown.reasons[0].message
    assert health.table_lines(TimescaleJobs(present=False))[-1].startswith("  not in this")
