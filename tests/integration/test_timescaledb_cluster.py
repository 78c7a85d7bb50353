"""TimescaleDB on a whole cluster: 10 days of 3 tenants' events, the policy jobs
run, and isolation that holds on the primary and on both replicas.

Runs on both cluster paths. With TimescaleDB: the columnstore job compresses
the chunks older than 7 days, the aggregate is refreshed, the retention job
(set to 9 days in config, changed in place) drops the oldest chunk. Without
it (the fallback): the same tables and views, nothing compressed or dropped.
Either way each tenant role sees exactly its own raw rows and roll-ups, other
tenants and the app role (without a tenant) see none, replicas answer the
same, health is HEALTHY, and the point-in-time drill still passes.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.backends.local_layout import layout, replicas
from infra.config import TimescaleSettings
from infra.dsn import conninfo
from infra.health import cli as health_cli
from infra.health.stack import StackTargets
from infra.schema import engine
from infra.timescaledb import policies
from tests import ports
from tests.integration.conftest import Cluster
from tests.tenant_roles import ensure_tenant_roles, query

ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = ROOT / "sql"
# Different rates, so that a tenant seeing another's rows changes every count.
RATES = {"acme": "1 minute", "globex": "2 minutes", "initech": "3 minutes"}
TENANTS = [{"slug": s, "name": s.title(), "plan": "standard"} for s in RATES]
SETTINGS = TimescaleSettings(retention="9 days")  # 10 days of data: the oldest chunk goes


@dataclass
class Loaded:
    cluster: Cluster
    ids: dict[str, str]
    tenant_dsns: dict[str, str]
    facts: dict[str, Any] = field(default_factory=dict)


def raw_summary(dsn: str, where: str = "") -> list[tuple[Any, ...]]:
    return query(dsn, f"SELECT tenant_id::text, count(*), min(occurred_at), max(occurred_at), "
                      f"sum(value) FROM tenant_events {where} GROUP BY 1 ORDER BY 1")


def rollups(dsn: str, relation: str = "tenant_events_hourly", where: str = "") -> list[Any]:
    return query(dsn, f"SELECT bucket, kind, events, avg_value, max_value FROM {relation} "
                      f"{where} ORDER BY bucket, kind")


def job_id(dsn: str, proc: str) -> int:
    return int(query(dsn, "SELECT job_id FROM timescaledb_information.jobs "
                          "WHERE proc_name = %s", (proc,))[0][0])


def call(dsn: str, statement: str, params: Any = None) -> None:
    """Outside a transaction block: refresh_continuous_aggregate refuses one."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


@pytest.fixture(scope="module")
def loaded(cluster: Cluster) -> Loaded:
    owner = cluster.owner_dsn()
    engine.apply(owner, engine.Options.build(SQL_DIR, TENANTS))
    policy_jobs = "SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000"
    if cluster.timescaledb:
        # Calling the jobs while the scheduler may run them too can deadlock the
        # two runs (which health then rightly reports): the scheduler pauses.
        for (jid,) in query(owner, policy_jobs):
            query(owner, "SELECT alter_job(%s, scheduled => false)", (jid,))
        wait_for(owner, "SELECT count(*) = 0 FROM timescaledb_information.job_stats "
                        "WHERE job_status = 'Running'", None)
    policies.apply(owner, SETTINGS.policy_inputs())
    ids = dict(query(owner, "SELECT slug, id::text FROM tenants WHERE slug = ANY(%s)",
                     (list(RATES),)))
    pw = ensure_tenant_roles(owner, cluster.cfg.postgres.app_role, list(RATES))
    pg = cluster.cfg.postgres
    dsns = {slug: cluster.dsn(pg.listen_address, pg.port, f"tenant_{slug}",
                              pw[f"tenant_{slug}"], pg.database) for slug in RATES}
    for slug, every in RATES.items():
        query(owner, """
            INSERT INTO events (tenant_id, occurred_at, kind, value)
            SELECT %s, g, (ARRAY['click', 'view', 'buy'])[1 + (extract(minute FROM g)::int %% 3)],
                   extract(epoch FROM g)::bigint %% 1000
            FROM generate_series(now() - INTERVAL '10 days', now(), %s::interval) g""",
              (ids[slug], every))
    # One row per tenant through its own view, as an application writes.
    for dsn in dsns.values():
        query(dsn, "INSERT INTO tenant_events (kind, value) VALUES ('signup', 1)")
    out = Loaded(cluster, ids, dsns)
    if not cluster.timescaledb:
        return out
    f = out.facts
    f["oldest_inserted"] = query(owner, "SELECT min(occurred_at) FROM events")[0][0]
    call(owner, "CALL run_job(%s)", (job_id(owner, "policy_compression"),))
    f["compressed"] = query(owner, "SELECT count(*) FROM timescaledb_information.chunks "
                                   "WHERE hypertable_name = 'events' AND is_compressed")[0][0]
    before, after = query(owner, "SELECT sum(before_compression_total_bytes), "
                                 "sum(after_compression_total_bytes) "
                                 "FROM chunk_compression_stats('public.events') "
                                 "WHERE compression_status = 'Compressed'")[0]
    f["ratio"] = float(before) / float(after)
    call(owner, "CALL refresh_continuous_aggregate('public.events_hourly', NULL, NULL)")
    call(owner, "CALL run_job(%s)", (job_id(owner, "policy_refresh_continuous_aggregate"),))
    call(owner, "CALL run_job(%s)", (job_id(owner, "policy_retention"),))
    f["chunks_after"] = query(owner, "SELECT count(*) FROM timescaledb_information.chunks "
                                     "WHERE hypertable_name = 'events'")[0][0]
    f["expired_left"] = query(owner, "SELECT count(*) FROM timescaledb_information.chunks "
                                     "WHERE hypertable_name = 'events' "
                                     "AND range_end < now() - INTERVAL '9 days'")[0][0]
    f["oldest_after_drop"] = query(owner, "SELECT min(occurred_at) FROM events")[0][0]
    for (jid,) in query(owner, policy_jobs):
        query(owner, "SELECT alter_job(%s, scheduled => true)", (jid,))
    print(f"\ncompression ratio on the 10-day data: {f['ratio']:.1f}x "
          f"({before} -> {after} bytes in {f['compressed']} chunks)")
    return out


def test_the_policy_jobs_compressed_refreshed_and_dropped(loaded: Loaded) -> None:
    owner = loaded.cluster.owner_dsn()
    f = loaded.facts
    if not loaded.cluster.timescaledb:
        assert query(owner, "SELECT count(*) FROM pg_extension "
                            "WHERE extname = 'timescaledb'") == [(0,)]
        assert query(owner, "SELECT relkind FROM pg_class "
                            "WHERE oid = 'events_hourly'::regclass") == [("v",)]
        return
    # Chunks whose whole range is older than 7 days: 2 or 3 of the 11, by the clock.
    assert f["compressed"] >= 2 and f["ratio"] > 2, f
    # Retention changed in place to 9 days dropped the chunk(s) older than that.
    assert f["expired_left"] == 0 and f["chunks_after"] <= 10
    assert f["oldest_after_drop"] > f["oldest_inserted"] + dt.timedelta(hours=1)
    assert query(owner, "SELECT count(*) FROM events WHERE occurred_at < "
                        "now() - INTERVAL '10 days'") == [(0,)]
    assert query(owner, "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
                        "WHERE proc_name = 'policy_retention'") == [("9 days",)]
    # The aggregate holds every hour the raw data still has.
    assert query(owner, "SELECT count(*) FROM (SELECT DISTINCT date_trunc('hour', occurred_at) "
                        "FROM events EXCEPT SELECT bucket FROM events_hourly) missing") == [(0,)]


def test_each_tenant_sees_exactly_its_own_rows_and_rollups(loaded: Loaded) -> None:
    owner = loaded.cluster.owner_dsn()
    for slug, dsn in loaded.tenant_dsns.items():
        tid = loaded.ids[slug]
        mine = raw_summary(dsn)
        truth = query(owner, "SELECT tenant_id::text, count(*), min(occurred_at), "
                             "max(occurred_at), sum(value) FROM events "
                             "WHERE tenant_id = %s GROUP BY 1", (tid,))
        assert mine == truth and mine[0][1] > 1000, (slug, mine, truth)
        assert rollups(dsn) == rollups(owner, "events_hourly", f"WHERE tenant_id = '{tid}'")
        # Every hour the 9-day retention keeps (older hours, if refreshed before the drop).
        assert len({r[0] for r in rollups(dsn)}) >= 8 * 24
        # A filter on another tenant finds nothing, through either view.
        for other, oid in loaded.ids.items():
            if other != slug:
                assert raw_summary(dsn, f"WHERE tenant_id = '{oid}'") == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(dsn, "SELECT count(*) FROM public.events")


def test_the_app_role_sees_nothing_without_a_tenant_and_one_tenant_with(
        loaded: Loaded) -> None:
    c = loaded.cluster
    pg = c.cfg.postgres
    app = c.dsn(pg.listen_address, pg.port, pg.app_role, c.passwords["app"], pg.database)
    assert raw_summary(app) == [] and rollups(app) == []
    for slug, dsn in loaded.tenant_dsns.items():
        with psycopg.connect(app) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (loaded.ids[slug],))
            seen = conn.execute("SELECT count(*) FROM tenant_events").fetchall()
        assert seen == [(raw_summary(dsn)[0][1],)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(app, "SELECT count(*) FROM public.events_hourly")


def test_replicas_serve_the_same_per_tenant_results(loaded: Loaded) -> None:
    c = loaded.cluster
    owner = c.owner_dsn()
    lsn = query(owner, "SELECT pg_current_wal_lsn()::text")[0][0]
    for i, rep in enumerate(replicas(c.cfg), start=1):
        deadline = time.monotonic() + 30
        while query(c.replica_dsn(i), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                    (lsn,))[0][0] is not True:
            assert time.monotonic() < deadline, f"replica {i} did not replay {lsn}"
            time.sleep(0.2)
        for slug, dsn in loaded.tenant_dsns.items():
            on_replica = conninfo(dsn, host=rep.host, port=rep.port)
            assert raw_summary(on_replica) == raw_summary(dsn), (slug, i)
            assert rollups(on_replica) == rollups(dsn), (slug, i)
        assert raw_summary(c.replica_dsn(i, owner=False)) == []  # the app, no tenant


def targets(c: Cluster) -> StackTargets:
    return StackTargets(cfg=c.cfg, monitoring=c.cfg.monitoring, primary_dsn=c.owner_dsn(),
                        monitor_dsn=c.monitor_dsn(),
                        replica_dsns=tuple(c.replica_dsn(i, owner=False)
                                           for i in range(1, len(replicas(c.cfg)) + 1)),
                        pooler_admin_dsn=c.admin_dsn(),
                        pgbackrest_config=layout(c.cfg).pgbackrest_conf)


def wait_for(dsn: str, sql_text: str, params: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not query(dsn, sql_text, params)[0][0]:
        assert time.monotonic() < deadline, f"timed out waiting for: {sql_text} {params}"
        time.sleep(0.5)


def add_failing_job(owner: str) -> int:
    """A job that always fails, started by the background scheduler at once."""
    query(owner, """CREATE OR REPLACE PROCEDURE public.pgp_failing_job(job_id int, config jsonb)
                    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'deliberate failure'; END $$""")
    return int(query(owner, "SELECT add_job('public.pgp_failing_job', '1 hour', "
                            "initial_start => now())")[0][0])


def test_health_is_healthy_then_degraded_by_a_failing_job_it_names(loaded: Loaded) -> None:
    c = loaded.cluster
    report = health_cli.gather(targets(c), SQL_DIR)
    assert report.status == "healthy", [str(r) for r in report.reasons]
    ts = report.timescaledb
    assert ts is not None and ts.present == c.timescaledb
    if not c.timescaledb:
        assert "fallback" in health_cli.table(report)
        return
    assert {j.proc for j in ts.jobs if j.job_id >= 1000} >= {
        "policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"}
    owner = c.owner_dsn()
    jid = add_failing_job(owner)
    try:
        wait_for(owner, "SELECT last_run_status = 'Failed' FROM "
                        "timescaledb_information.job_stats WHERE job_id = %s", (jid,))
        report = health_cli.gather(targets(c), SQL_DIR)
        assert report.status == "degraded" and report.exit_code == 1
        [reason] = [r for r in report.reasons if r.component == "timescaledb"]
        assert f"job {jid} " in reason.message and "pgp_failing_job" in reason.message
        assert "deliberate failure" in reason.message
    finally:
        query(owner, "SELECT delete_job(%s)", (jid,))
    assert health_cli.gather(targets(c), SQL_DIR).status == "healthy"


def test_scheduled_retention_and_refresh_jobs_succeed_in_the_background(
        loaded: Loaded) -> None:
    c = loaded.cluster
    if not c.timescaledb:
        return  # the fallback has no jobs: test_the_policy_jobs... checks that
    owner = c.owner_dsn()
    for proc in ("policy_retention", "policy_refresh_continuous_aggregate"):
        jid = job_id(owner, proc)
        t0 = query(owner, "SELECT now()")[0][0]
        query(owner, "SELECT alter_job(%s, next_start => now())", (jid,))
        wait_for(owner, "SELECT last_run_status = 'Success' AND last_run_started_at >= %s "
                        "FROM timescaledb_information.job_stats WHERE job_id = %s", (t0, jid))


def test_the_point_in_time_drill_passes_with_the_loaded_data(loaded: Loaded) -> None:
    c = loaded.cluster
    lay = layout(c.cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "infra.backup", "drill", "--rows", "5",
         "--config", str(lay.pgbackrest_conf), "--stanza", c.cfg.backup.stanza,
         "--dsn", c.owner_dsn(), "--restores-dir", str(lay.restores)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lost: 0" in proc.stdout


def test_the_real_exporter_reports_the_jobs_chunks_and_ratio(loaded: Loaded,
                                                             scratch: Path) -> None:
    """prometheus-postgres-exporter with the rendered queries, scraped, on this cluster."""
    import urllib.request

    from infra import hostctl
    from infra.backends.local_exporters import ExporterProvider
    from infra.render import monitoring as render_monitoring
    from infra.schema.files import MigrationSet

    c = loaded.cluster
    run_dir = hostctl.make_dir(scratch / "exporters", 0o755)  # the exporter runs as postgres
    port = ports.free_port()
    queries = run_dir / "queries.yaml"
    props: dict[str, Any] = {
        "name": "postgres-exporter-ts", "run_dir": str(run_dir), "listen": "127.0.0.1",
        "port": port, "argv": list(render_monitoring.postgres_exporter_command(
            "127.0.0.1", port, str(queries)).argv),
        "files": {str(queries): render_monitoring.postgres_exporter_queries(
            c.cfg, MigrationSet.load(SQL_DIR))},
        # As the stack runs it: platform_monitor (pg_monitor and read grants only).
        "secret_env": {"DATA_SOURCE_NAME": c.monitor_dsn()}}

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as resp:
            body = resp.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r"^pgplatform_timescaledb_(\w+)\{[^}]*\} (\S+)$", body, re.M)}

    provider = ExporterProvider()
    provider.create(props)
    try:
        got = scrape()
        assert "installed" in got, (run_dir / "postgres-exporter-ts.log").read_text()[-3000:]
        if not c.timescaledb:
            assert got["installed"] == 0 and got["jobs"] == 0 and got["compression_ratio"] == 0
            return
        owner = c.owner_dsn()
        chunks, compressed = query(owner, "SELECT count(*), count(*) FILTER (WHERE "
                                          "is_compressed) FROM timescaledb_information.chunks")[0]
        assert got["installed"] == 1 and got["jobs"] >= 4 and got["jobs_failed"] == 0, got
        assert (got["chunks"], got["chunks_compressed"]) == (chunks, compressed), got
        assert got["compression_ratio"] > 2, got
        # A job that fails in the background shows up; gone again once deleted.
        jid = add_failing_job(owner)
        try:
            wait_for(owner, "SELECT last_run_status = 'Failed' FROM "
                            "timescaledb_information.job_stats WHERE job_id = %s", (jid,))
            assert scrape()["jobs_failed"] == 1
        finally:
            query(owner, "SELECT delete_job(%s)", (jid,))
        assert scrape()["jobs_failed"] == 0
    finally:
        provider.delete("x", props)
