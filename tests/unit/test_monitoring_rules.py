"""Alert rules, exporter queries and the dashboard, checked with Prometheus's own promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from infra import config
from infra.config import MonitoringSettings, full_backup_max_age_seconds
from infra.render.monitoring import MONITORING, alert_rules, postgres_exporter_queries
from infra.schema.files import MigrationSet

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = MONITORING / "grafana-dashboard.json"
STACK = "t"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def rules_of(text: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(text)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def test_committed_rules_are_the_default_rendering() -> None:
    cfg = config.load({}, "local")
    assert (MONITORING / "alerts.yml").read_text() == alert_rules(cfg, MonitoringSettings())


def test_promtool_check_rules_passes() -> None:
    proc = promtool("check", "rules", "alerts.yml", cwd=MONITORING)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_runbook_and_severity() -> None:
    required = {"PostgresNodeDown", "ReplicationLagHigh", "FullBackupTooOld",
                "WalArchivingFailing", "PoolClientsWaiting", "ConnectionsNearMax",
                "PendingMigrations"}
    rules = rules_of((MONITORING / "alerts.yml").read_text())
    assert required <= set(rules)
    for name, rule in rules.items():
        assert len(rule["annotations"].get("runbook", "")) > 20, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name


def _expected(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool should report: the series' labels plus the rule's, annotations
    with `$labels` filled in."""
    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return {"exp_labels": {**labels, **rule["labels"]},
            "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def test_lag_and_backup_alerts_fire_on_bad_series_only(tmp_path: Path) -> None:
    mon = MonitoringSettings(replication_lag_seconds=30)
    cfg = config.load({}, STACK)
    text = alert_rules(cfg, mon)
    rules = rules_of(text)
    (tmp_path / "alerts.yml").write_text(text)
    max_age = full_backup_max_age_seconds(mon, cfg.backup.schedule.full)
    lagging = {"job": "postgres", "node": "replica-1", "stack": STACK}
    caught_up = {"job": "postgres", "node": "replica-2", "stack": STACK}
    old = {"job": "postgres", "node": "primary", "stack": STACK, "type": "full"}
    fresh = {"job": "postgres", "node": "primary", "stack": "other", "type": "full"}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return {"series": f"{name}{{{body}}}", "values": values}

    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m",
             "input_series": [
                 # 10 more seconds behind every minute: over 30s from minute 4.
                 series("pgplatform_replication_lag_seconds", lagging, "0+10x30"),
                 series("pgplatform_replication_lag_seconds", caught_up, "0 1 0 2 0x26"),
             ],
             "alert_rule_test": [
                 {"eval_time": "3m", "alertname": "ReplicationLagHigh", "exp_alerts": []},
                 {"eval_time": "10m", "alertname": "ReplicationLagHigh",
                  "exp_alerts": [_expected(rules["ReplicationLagHigh"], lagging)]},
             ]},
            {"interval": "1m",
             "input_series": [
                 series("pgplatform_backup_age_seconds", old, f"{max_age - 300}+60x40"),
                 series("pgplatform_backup_age_seconds", fresh, "3600+60x40"),
             ],
             "alert_rule_test": [
                 {"eval_time": "5m", "alertname": "FullBackupTooOld", "exp_alerts": []},
                 {"eval_time": "30m", "alertname": "FullBackupTooOld",
                  "exp_alerts": [_expected(rules["FullBackupTooOld"], old)]},
             ]},
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    proc = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The harness above proves something: a healthy series expected to alert fails."""
    cfg = config.load({}, STACK)
    (tmp_path / "alerts.yml").write_text(alert_rules(cfg, MonitoringSettings()))
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'pgplatform_replication_lag_seconds{node="r"}',
                          "values": "0x20"}],
        "alert_rule_test": [{"eval_time": "10m", "alertname": "ReplicationLagHigh",
                             "exp_alerts": [{"exp_labels": {"node": "r"}}]}]}]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    assert promtool("test", "rules", "tests.yml", cwd=tmp_path).returncode != 0


def query_metric_names(queries_yaml: str) -> set[str]:
    """Metric names prometheus-postgres-exporter makes of a queries.yaml."""
    doc = yaml.safe_load(queries_yaml)
    names = set()
    for ns, q in doc.items():
        for m in q["metrics"]:
            ((column, spec),) = m.items()
            if spec["usage"] != "LABEL":
                names.add(f"{ns}_{column}")
    return names


def dashboard_metric_names() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    found: set[str] = set()
    for e in exprs:
        found |= set(re.findall(r"\b(?:pgplatform|pgbouncer|pg)_[a-z0-9_]+|\bup\b", e))
    return found


def test_queries_render_and_name_every_custom_metric_the_dashboard_uses() -> None:
    cfg = config.load({"replicas": 2}, STACK)
    text = postgres_exporter_queries(cfg, MigrationSet.load(ROOT / "sql"))
    names = query_metric_names(text) | BACKUP_COLLECTOR_METRICS
    assert "pgplatform_replicas_expected" in names
    assert "SELECT 2 AS expected" in text
    used = {n for n in dashboard_metric_names() if n.startswith("pgplatform_")}
    assert used and used <= names, used - names


# Served by monitoring/pgbackrest_exporter.py, not by a query.
BACKUP_COLLECTOR_METRICS = {"pgplatform_backup_count", "pgplatform_backup_age_seconds",
                            "pgplatform_backup_last_completion_timestamp_seconds",
                            "pgplatform_backup_info_up"}


def test_no_query_reads_files_on_the_server() -> None:
    """The exporters log in as platform_monitor: no pg_read_file, no superuser-only call."""
    text = postgres_exporter_queries(config.load({}, STACK), MigrationSet.load(ROOT / "sql"))
    yaml.safe_load(text)
    assert not re.search(r"pg_read_(binary_)?file|pg_ls_dir|lo_import|COPY", text)
    assert "pgplatform_backup" not in yaml.safe_load(text)


def test_backup_collector_serves_ages_by_type() -> None:
    from monitoring.pgbackrest_exporter import backup_metrics

    info = [{"name": "main", "backup": [
        {"type": "full", "timestamp": {"start": 90, "stop": 100}},
        {"type": "full", "timestamp": {"start": 190, "stop": 200}},
        {"type": "incr", "timestamp": {"start": 290, "stop": 300}}]},
        {"name": "other", "backup": [{"type": "diff", "timestamp": {"stop": 999}}]}]
    got = backup_metrics(info, "main", now=1000.0)
    assert got["count"] == {"full": 2, "diff": 0, "incr": 1}
    assert got["last_completion_timestamp_seconds"] == {"full": 200, "diff": 0, "incr": 300}
    assert got["age_seconds"] == {"full": 800, "diff": 1000, "incr": 700}
