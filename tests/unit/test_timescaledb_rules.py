"""The TimescaleDB alert under promtool: it fires on failed jobs and stays quiet otherwise."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra import config
from infra.config import MonitoringSettings
from infra.render.monitoring import alert_rules, postgres_exporter_queries
from infra.schema.files import MigrationSet
from tests.unit.test_monitoring_rules import ROOT, STACK, _expected, promtool, rules_of


def series(labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"pgplatform_timescaledb_jobs_failed{{{body}}}", "values": values}


def test_timescaledb_alert_fires_on_a_failing_job_and_stays_quiet_otherwise(
        tmp_path: Path) -> None:
    text = alert_rules(config.load({}, STACK), MonitoringSettings())
    rule = rules_of(text)["TimescaleDBJobsFailing"]
    (tmp_path / "alerts.yml").write_text(text)
    failing = {"job": "postgres", "node": "primary", "stack": STACK}
    healthy = {"job": "postgres", "node": "primary", "stack": "other"}
    # A job failing briefly (a deadlock with a foreground run, retried fine) is not paged.
    blip = {"job": "postgres", "node": "primary", "stack": "blip"}
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [series(failing, "0x5 1x60"), series(healthy, "0x65"),
                         series(blip, "0x5 1x10 0x50")],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "TimescaleDBJobsFailing", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "TimescaleDBJobsFailing", "exp_alerts": []},
            {"eval_time": "50m", "alertname": "TimescaleDBJobsFailing",
             "exp_alerts": [_expected(rule, failing)]},
        ]}]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    proc = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_exporter_reports_jobs_chunks_and_the_compression_ratio() -> None:
    doc = yaml.safe_load(postgres_exporter_queries(config.load({}, STACK),
                                                   MigrationSet.load(ROOT / "sql")))
    metrics = [next(iter(m)) for m in doc["pgplatform_timescaledb"]["metrics"]]
    assert metrics == ["installed", "jobs", "jobs_failed", "chunks", "chunks_compressed",
                       "compression_ratio"]
    # Failed means the newer of the scheduler's run and pg-platform's runner's.
    assert "timescaledb_job_runs" in doc["pgplatform_timescaledb"]["query"]
