"""Health and metrics of a real throw-away stack: one primary, one replica, PgBouncer,
pgBackRest, and the exporters `pulumi up` starts for them.

The module brings the stack up once through the real engine. The tests read it
the way users do: `python -m infra.health` (what `make status` runs), a real
Prometheus from Debian's package scraping the rendered config, and the
exporters' own /metrics. The last test stops the replica, so it runs last.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from infra import hostctl
from infra.backends import local_layout
from infra.render import monitoring as render_monitoring
from tests import ports
from tests.engine import ROOT, ThrowawayStack
from tests.unit.test_monitoring_rules import dashboard_metric_names

pytestmark = pytest.mark.engine

NAME = "mon"
TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "free"}]


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    s = ThrowawayStack(NAME, {
        "postgres": {"port": ports.stack_port()},
        "pooler": {"port": ports.free_port()},
        "replicas": 1,
        "tenants": TENANTS,
        "monitoring": {"postgres_exporter_port": ports.free_run(2),
                       "pgbouncer_exporter_port": ports.free_run(2),  # + 1: backups
                       "scrape_interval_seconds": 1},
    })
    try:
        s.init()
        s.up()
        # A pool appears in SHOW POOLS once a client has used it.
        with psycopg.connect(s.outputs()["pooler_dsn"], prepare_threshold=None,
                             autocommit=True) as conn:
            conn.execute("SELECT 1")
        yield s
    finally:
        s.remove()


def test_a_second_up_changes_nothing(stack: ThrowawayStack) -> None:
    """The exporters are idempotent resources too: nothing to do when nothing changed."""
    stack.preview("--expect-no-changes")


def health(s: ThrowawayStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.health", "--stack", NAME, "--project-dir",
         str(s.project), *args],
        cwd=ROOT, env=s.env, capture_output=True, text=True, timeout=120, check=False)


def truth(s: ThrowawayStack) -> dict[str, Any]:
    """What the stack really holds, read straight from the primary."""
    with psycopg.connect(s.outputs()["primary_dsn"]) as conn:
        tenants = conn.execute("SELECT count(*) FROM public.tenants WHERE is_active").fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()
    assert tenants and version
    return {"tenants": int(tenants[0]), "version_num": int(version[0])}


def test_health_shows_every_node_pool_backup_and_schema(stack: ThrowawayStack) -> None:
    proc = health(stack, "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == report["exit_code"]
    assert report["status"] == "healthy", report["reasons"]
    assert proc.returncode == 0
    nodes = {n["name"]: n for n in report["nodes"]}
    assert set(nodes) == {"primary", "replica-1"}
    assert nodes["primary"]["up"] and nodes["primary"]["role"] == "primary"
    assert nodes["replica-1"]["role"] == "replica"
    assert nodes["replica-1"]["replication_state"] == "streaming"
    assert nodes["replica-1"]["lag_bytes"] is not None
    assert nodes["primary"]["max_connections"] == 100
    assert nodes["primary"]["connections"] >= 1
    pools = {(p["database"], p["user"]) for p in report["pooler"]["pools"]}
    assert ("platform", "app") in pools
    assert report["backups"]["count"]["full"] >= 1
    assert report["backups"]["age_seconds"]["full"] < 3600
    assert report["backups"]["last_archived_wal"]
    assert report["schema"]["pending"] == []
    assert report["schema"]["tenants"] == truth(stack)["tenants"] == len(TENANTS)
    # The table (what `make status` prints) names every part, and never a password.
    table = health(stack)
    assert table.returncode == 0
    for needle in ("primary", "replica-1", "platform/app", "last full", "WAL archiving",
                   "pending migrations: 0", f"active tenants: {len(TENANTS)}",
                   "status: HEALTHY"):
        assert needle in table.stdout, needle
    password = str(conninfo_to_dict(stack.outputs()["primary_dsn"]).get("password", ""))
    assert password and password not in table.stdout + proc.stdout + proc.stderr


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def exporter_addresses(s: ThrowawayStack) -> list[str]:
    cfg = s.ref.config()
    return [t.address for t in render_monitoring.local_targets(cfg)]


def test_dashboard_queries_only_metrics_the_exporters_expose(stack: ThrowawayStack) -> None:
    exposed: set[str] = {"up"}  # Prometheus adds `up` to every target
    for address in exporter_addresses(stack):
        exposed |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", scrape(address),
                                  re.MULTILINE))
    used = dashboard_metric_names()
    assert used - exposed == set()
    assert {"pgplatform_backup_age_seconds", "pgbouncer_waiting_clients"} <= used


class Prometheus:
    """Debian's prometheus on a free loopback port with a scratch TSDB."""

    def __init__(self, config_text: str, workdir: Path) -> None:
        self.port = ports.free_port()
        (workdir / "prometheus.yml").write_text(config_text)
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}")
            try:
                result = self.query(promql)
            except OSError:
                result = []
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {promql} within {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def test_prometheus_scrapes_the_custom_metrics_with_the_stacks_values(
        stack: ThrowawayStack, scratch: Path) -> None:
    config_text = health(stack, "--scrape-config").stdout
    rules = health(stack, "--alert-rules").stdout
    (scratch / "alerts.yml").write_text(rules)
    config_text = config_text.replace(str(render_monitoring.MONITORING / "alerts.yml"),
                                      str(scratch / "alerts.yml"))
    prom = Prometheus(config_text, scratch)
    try:
        def value(promql: str) -> float:
            (sample,) = prom.wait_for(promql)
            return float(sample["value"][1])

        # Every target (two postgres exporters, the pgbouncer exporter, the backup
        # collector) is up.
        ups = prom.wait_for('count(up{stack="mon"} == 1) == 4')
        assert ups
        facts = truth(stack)
        assert value('pgplatform_schema_tenants{stack="mon"}') == facts["tenants"]
        assert value('pgplatform_schema_pending_migrations{stack="mon"}') == 0
        assert value('pgplatform_node_version_num{node="primary"}') == facts["version_num"]
        assert value('pgplatform_replicas_streaming{stack="mon"}') == 1
        assert value('pgplatform_replication_streaming{node="replica-1"}') == 1
        assert value('pgplatform_backup_count{stack="mon",type="full"}') >= 1
        assert value('pgplatform_backup_age_seconds{stack="mon",type="full"}') < 3600
        assert value('pgplatform_archiver_failing{stack="mon"}') == 0
        assert value('sum(pgbouncer_active_clients{stack="mon",database="pgbouncer"})') >= 1
        assert value('pgbouncer_pool_size{stack="mon",database="platform"}') == 20
        # The rules loaded and nothing fires on a healthy stack.
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/api/v1/rules") as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        assert groups and all(r["state"] == "inactive" for g in groups for r in g["rules"])
    finally:
        prom.stop()


def run_infra(s: ThrowawayStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", *args], cwd=ROOT, env=s.env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_one_entry_point_reads_the_stack_for_every_command(stack: ThrowawayStack) -> None:
    """`python -m infra schema|health --stack S`: no DSN on the command line, one exit policy."""
    where = ("--stack", NAME, "--project-dir", str(stack.project))
    schema = run_infra(stack, "schema", "status", *where, "--detailed-exitcode")
    assert schema.returncode == 0, schema.stdout + schema.stderr
    assert "up to date" in schema.stdout
    health = run_infra(stack, "health", *where, "--json")
    assert health.returncode == json.loads(health.stdout)["exit_code"] == 0, health.stdout
    for cmd in ("schema", "health"):
        missing = run_infra(stack, cmd, *(["status"] if cmd == "schema" else []),
                            "--stack", "no-such-stack", "--project-dir", str(stack.project))
        assert missing.returncode == 2, (cmd, missing.stdout, missing.stderr)
        assert "no-such-stack" in missing.stderr and "Traceback" not in missing.stderr
    assert run_infra(stack).returncode == 2


def test_stopping_a_replica_degrades_status_and_names_it(stack: ThrowawayStack) -> None:
    cfg = stack.ref.config()
    (rep,) = local_layout.replicas(cfg)
    hostctl.Server(Path(rep.paths.data_dir), rep.port, rep.host).stop()
    proc = health(stack, "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert report["status"] == "degraded"
    # With its only replica down, the read-only pool refuses logins too (health probes it).
    assert [r["component"] for r in report["reasons"]] == ["replica-1", "pooler"]
    assert "read-only pool" in report["reasons"][1]["message"]
    assert "down" in report["reasons"][0]["message"]
    table = health(stack).stdout
    assert "status: DEGRADED" in table and "replica-1" in table.split("status:")[1]
    # Its exporter keeps answering and says the node is down (PostgresNodeDown).
    replica_exporter = exporter_addresses(stack)[1]
    assert re.search(r"^pg_up 0$", scrape(replica_exporter), re.MULTILINE)
