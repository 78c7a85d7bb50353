"""`pulumi up` with TimescaleDB through the real engine: policies from config,
changed in place and shown by preview first, the job runner supervised, and a
second run with nothing to do.

The stack preloads TimescaleDB because it is installed (the suite installs it
when it is missing), as `make up` does after `scripts/bootstrap`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.hostctl.jobrunner import running_pid
from tests.engine import ThrowawayStack
from tests.integration.conftest import cluster_ports
from tests.tenant_roles import query
from tests.timescale import ensure_installed

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ThrowawayStack, dict[str, Any]]]:
    ensure_installed()
    port, pooler_port = cluster_ports()
    settings: dict[str, Any] = {"postgres": {"port": port}, "replicas": 0,
                                "pooler": {"port": pooler_port},
                                "monitoring": {"exporters": False},
                                "tenants": [{"slug": "acme", "name": "Acme", "plan": "free"}]}
    s = ThrowawayStack("tsstack", settings)
    try:
        s.init()
        s.up()
        yield s, settings
    finally:
        s.remove()


def jobs(dsn: str) -> dict[str, tuple[int, Any]]:
    return {r[0]: (r[1], r[2]) for r in query(
        dsn, "SELECT proc_name, job_id, config FROM timescaledb_information.jobs "
             "WHERE job_id >= 1000")}


def test_up_makes_events_a_hypertable_with_three_policies_and_runs_the_runner(
        stack: tuple[ThrowawayStack, dict[str, Any]]) -> None:
    s, _ = stack
    dsn = s.outputs()["primary_dsn"]
    assert query(dsn, "SELECT hypertable_name, compression_enabled FROM "
                      "timescaledb_information.hypertables") == [("events", True)]
    assert query(dsn, "SELECT view_name FROM timescaledb_information.continuous_aggregates"
                 ) == [("events_hourly",)]
    j = jobs(dsn)
    assert set(j) == {"policy_compression", "policy_retention",
                      "policy_refresh_continuous_aggregate"}
    assert j["policy_retention"][1]["drop_after"] == "90 days"
    assert j["policy_compression"][1]["compress_after"] == "7 days"
    runner = {"run_dir": str(s.state_dir / "jobrunner"), "python": "", "mode": "auto",
              "interval": 30.0}
    pid_file = s.state_dir / "jobrunner" / "timescaledb-job-runner.pid"
    assert pid_file.exists()
    cmdline = Path(f"/proc/{pid_file.read_text().strip()}/cmdline").read_bytes()
    assert b"infra.timescaledb\0run-jobs" in cmdline and b"postgresql://" not in cmdline
    assert running_pid({**runner, "python": cmdline.split(b"\0")[0].decode()}) is not None
    assert s.preview("--expect-no-changes", check=False).returncode == 0


def test_a_retention_change_shows_in_preview_and_alters_the_job_in_place(
        stack: tuple[ThrowawayStack, dict[str, Any]]) -> None:
    s, settings = stack
    dsn = s.outputs()["primary_dsn"]
    before = jobs(dsn)
    s.set_config({**settings, "timescaledb": {"retention": "30 days",
                                              "compress_after": "2 days"}})
    preview = s.preview().stdout
    assert "timescaledb-policies" in preview and "30 days" in preview, preview[-3000:]
    s.up()
    after = jobs(dsn)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert after["policy_retention"][1]["drop_after"] == "30 days"
    assert after["policy_compression"][1]["compress_after"] == "2 days"
    assert s.preview("--expect-no-changes", check=False).returncode == 0


def test_a_bad_policy_setting_is_refused_before_anything_changes(
        stack: tuple[ThrowawayStack, dict[str, Any]]) -> None:
    s, settings = stack
    s.set_config({**settings, "timescaledb": {"retention": "3 days"}})
    proc = s.preview(check=False)
    assert proc.returncode != 0
    assert "pg-platform:timescaledb.compress_after='7 days' must be shorter than " \
           "pg-platform:timescaledb.retention='3 days'" in proc.stdout + proc.stderr
