"""The reference SQL on both TimescaleDB paths, on real servers.

`platform_db` runs each test twice: on a server with TimescaleDB installed and
preloaded, and on one where it is installed but not preloaded (the fallback).
Both must expose the same tables and views, and isolate tenants the same way.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from infra.config import TimescaleSettings
from infra.schema import engine
from infra.timescaledb import policies
from tests.support import FreshDatabase
from tests.tenant_roles import ensure_tenant_roles, query

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "standard"}]


def is_ts(db: FreshDatabase) -> bool:
    return bool(query(db.dsn, "SELECT count(*) FROM pg_extension "
                              "WHERE extname = 'timescaledb'")[0][0])


def test_both_paths_have_the_same_relations_and_only_the_views_are_granted(
        platform_db: FreshDatabase, request: pytest.FixtureRequest) -> None:
    engine.apply(platform_db.dsn, engine.Options.build(SQL_DIR, TENANTS))
    path = request.node.callspec.params["platform_db"]
    assert is_ts(platform_db) == (path == "timescaledb")
    kinds = dict(query(platform_db.dsn, """
        SELECT c.relname, c.relkind FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relname IN ('events', 'events_hourly', 'tenant_events', 'tenant_events_hourly')
    """))
    assert set(kinds) == {"events", "events_hourly", "tenant_events", "tenant_events_hourly"}
    assert kinds["tenant_events"] == kinds["tenant_events_hourly"] == "v"
    # No RLS on events on either path: the views isolate instead.
    assert query(platform_db.dsn, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                                  "WHERE oid = 'public.events'::regclass") == [(False, False)]
    grants = query(platform_db.dsn, """
        SELECT table_name, grantee, string_agg(privilege_type, ',' ORDER BY privilege_type)
        FROM information_schema.role_table_grants
        WHERE table_schema = 'public' AND grantee NOT IN (current_user)
          AND table_name IN ('events', 'events_hourly', 'tenant_events', 'tenant_events_hourly')
        GROUP BY 1, 2 ORDER BY 1, 2""")
    assert grants == [("tenant_events", "app", "INSERT,SELECT"),
                      ("tenant_events", "platform_tenant", "INSERT,SELECT"),
                      ("tenant_events_hourly", "app", "SELECT"),
                      ("tenant_events_hourly", "platform_tenant", "SELECT")]
    if path == "timescaledb":
        assert query(platform_db.dsn, "SELECT hypertable_name FROM "
                                      "timescaledb_information.hypertables") == [("events",)]
        procs = sorted(r[0] for r in query(platform_db.dsn,
                                           "SELECT proc_name FROM timescaledb_information.jobs "
                                           "WHERE job_id >= 1000"))
        assert procs == ["policy_compression", "policy_refresh_continuous_aggregate",
                         "policy_retention"]
        telemetry = query(platform_db.dsn, "SHOW timescaledb.telemetry_level")
        assert telemetry == [("off",)]
    else:
        indexes = [r[0] for r in query(platform_db.dsn, "SELECT indexdef FROM pg_indexes "
                                                        "WHERE tablename = 'events'")]
        assert any("USING brin (occurred_at)" in i for i in indexes), indexes
        # The procedure exists on both paths and is a no-op here.
        policies.apply(platform_db.dsn, TimescaleSettings().policy_inputs())


def test_tenant_roles_see_and_write_only_their_own_rows(platform_db: FreshDatabase) -> None:
    engine.apply(platform_db.dsn, engine.Options.build(SQL_DIR, TENANTS))
    ids = dict(query(platform_db.dsn, "SELECT slug, id::text FROM tenants"))
    pw = ensure_tenant_roles(platform_db.dsn, "app", ["acme", "globex"])
    server = platform_db.server.server
    acme = server.dsn("tenant_acme", pw["tenant_acme"], platform_db.name)
    globex = server.dsn("tenant_globex", pw["tenant_globex"], platform_db.name)
    # Inserts through the view: tenant_id defaults to the caller's tenant.
    query(acme, "INSERT INTO tenant_events (kind, value) VALUES ('click', 1), ('view', 2)")
    query(globex, "INSERT INTO tenant_events (kind, value) VALUES ('click', 5)")
    assert query(acme, "SELECT kind, tenant_id::text FROM tenant_events ORDER BY kind") == \
        [("click", ids["acme"]), ("view", ids["acme"])]
    assert query(globex, "SELECT count(*) FROM tenant_events") == [(1,)]
    # Writing for another tenant is refused by the view's check option.
    with pytest.raises(psycopg.errors.WithCheckOptionViolation):
        query(acme, "INSERT INTO tenant_events (tenant_id, kind) VALUES (%s, 'x')",
              (ids["globex"],))
    # The base table and the roll-up source are granted to nobody.
    for table in ("events", "events_hourly"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(acme, f"SELECT count(*) FROM public.{table}")
    # A tenant cannot pick another tenant through the app's setting.
    assert query(acme, "SELECT count(*) FROM tenant_events", tenant=ids["globex"]) == [(2,)]
    # A leaky function in the caller's WHERE never sees the other tenant's rows.
    query(platform_db.dsn, """
        CREATE OR REPLACE FUNCTION public.pgp_leak(k text) RETURNS boolean
        LANGUAGE plpgsql COST 0.0000001 AS $$ BEGIN RAISE NOTICE 'saw %', k; RETURN true; END $$
    """)
    seen: list[str] = []
    with psycopg.connect(acme) as conn:
        conn.add_notice_handler(lambda d: seen.append(d.message_primary or ""))
        conn.execute("SELECT * FROM tenant_events WHERE public.pgp_leak(kind || tenant_id)")
    assert seen and all(ids["acme"] in s for s in seen), seen


def test_a_policy_change_in_config_alters_the_jobs_in_place(
        platform_db: FreshDatabase, request: pytest.FixtureRequest) -> None:
    engine.apply(platform_db.dsn, engine.Options.build(SQL_DIR, []))
    if request.node.callspec.params["platform_db"] != "timescaledb":
        assert policies.apply(platform_db.dsn, TimescaleSettings().policy_inputs())["mode"] \
            == "fallback"
        return
    sql_jobs = """SELECT proc_name, job_id, schedule_interval::text, config
                  FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY proc_name"""
    before = query(platform_db.dsn, sql_jobs)
    changed = TimescaleSettings(retention="30 days", compress_after="3 days",
                                refresh_every="30 minutes", chunk_interval="12 hours")
    out = policies.apply(platform_db.dsn, changed.policy_inputs())
    after = query(platform_db.dsn, sql_jobs)
    assert out["mode"] == "timescaledb"
    assert [(r[0], r[1]) for r in after] == [(r[0], r[1]) for r in before]  # same job ids
    by_proc = {r[0]: r for r in after}
    assert by_proc["policy_retention"][3]["drop_after"] == "30 days"
    assert by_proc["policy_compression"][3]["compress_after"] == "3 days"
    assert by_proc["policy_refresh_continuous_aggregate"][2] == "00:30:00"
    assert query(platform_db.dsn, "SELECT time_interval::text FROM "
                                  "timescaledb_information.dimensions "
                                  "WHERE hypertable_name = 'events'") == [("12:00:00",)]
    # Unchanged settings change nothing; the defaults put everything back.
    policies.apply(platform_db.dsn, changed.policy_inputs())
    assert query(platform_db.dsn, sql_jobs) == after
    policies.apply(platform_db.dsn, TimescaleSettings().policy_inputs())
    assert query(platform_db.dsn, sql_jobs) == before


def _wait(dsn: str, sql_text: str, params: object, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not query(dsn, sql_text, params)[0][0]:
        assert time.monotonic() < deadline, f"timed out: {sql_text} {params}"
        time.sleep(0.3)


def test_the_runner_takes_over_a_job_the_scheduler_cannot_run(
        platform_db: FreshDatabase, request: pytest.FixtureRequest) -> None:
    """A job that fails only in background workers stands in for a broken job runner
    (2.28.3 on 15.20): detected by behaviour, taken over, run, reported healthy."""
    from infra.timescaledb import health, jobs

    dsn = platform_db.dsn
    engine.apply(dsn, engine.Options.build(SQL_DIR, []))
    if request.node.callspec.params["platform_db"] != "timescaledb":
        assert jobs.tick(dsn, "auto") == [] and health.probe(dsn).present is False
        return
    query(dsn, "CREATE TABLE public.pgp_runs (at timestamptz DEFAULT clock_timestamp())")
    query(dsn, """CREATE PROCEDURE public.pgp_picky(job_id int, config jsonb)
                  LANGUAGE plpgsql AS $$ BEGIN
                      IF current_setting('application_name') NOT LIKE 'pg-platform job runner%' THEN
                          RAISE EXCEPTION 'cannot drop portal "" while it is being set up';
                      END IF;
                      INSERT INTO public.pgp_runs DEFAULT VALUES;
                  END $$""")
    query(dsn, """CREATE PROCEDURE public.pgp_broken(job_id int, config jsonb)
                  LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'really broken'; END $$""")
    picky = query(dsn, "SELECT add_job('public.pgp_picky', '1 hour', initial_start => now())")[0][0]
    broken = query(dsn, "SELECT add_job('public.pgp_broken', '1 hour', "
                        "initial_start => now())")[0][0]
    for jid in (picky, broken):
        _wait(dsn, "SELECT last_run_status = 'Failed' FROM timescaledb_information.job_stats "
                   "WHERE job_id = %s", (jid,))
    failing = {j.job_id for j in health.probe(dsn).jobs if j.failed}
    assert failing == {picky, broken}

    outcomes = {o.job_id: o.succeeded for o in jobs.tick(dsn, "auto")}
    assert outcomes == {picky: True, broken: False}
    by_id = {j.job_id: j for j in health.probe(dsn).jobs}
    assert not by_id[picky].scheduled and by_id[picky].last_status == "Success"
    assert by_id[picky].runner == "pg-platform runner"
    assert by_id[broken].scheduled and by_id[broken].failed  # a real failure stays named
    assert "really broken" in (by_id[broken].error or "")
    reasons = health.reasons(health.probe(dsn))
    assert [m for _, m in reasons if f"job {picky} " in m] == []
    assert [m for _, m in reasons if f"job {broken} " in m]
    assert query(dsn, "SELECT count(*) FROM public.pgp_runs") == [(1,)]
    # Not due again for an hour; a second pass leaves both alone.
    assert jobs.tick(dsn, "auto") == []
    # Made due (an hour later), the runner calls it again.
    query(dsn, "UPDATE public.timescaledb_job_runs SET started_at = started_at - "
               "INTERVAL '61 minutes' WHERE job_id = %s", (picky,))
    assert [(o.job_id, o.succeeded) for o in jobs.tick(dsn, "auto")] == [(picky, True)]
    assert query(dsn, "SELECT count(*) FROM public.pgp_runs") == [(2,)]


def test_supervised_mode_runs_every_policy_job_itself(
        platform_db: FreshDatabase, request: pytest.FixtureRequest) -> None:
    from infra.timescaledb import health, jobs

    dsn = platform_db.dsn
    engine.apply(dsn, engine.Options.build(SQL_DIR, []))
    if request.node.callspec.params["platform_db"] != "timescaledb":
        assert jobs.tick(dsn, "supervised") == []
        return
    outcomes = jobs.tick(dsn, "supervised")
    assert sorted(o.job_id for o in outcomes if o.succeeded) == sorted(
        r[0] for r in query(dsn, "SELECT job_id FROM timescaledb_information.jobs "
                                 "WHERE job_id >= 1000"))
    statuses = [j for j in health.probe(dsn).jobs if j.job_id >= 1000]
    assert statuses and all(not j.scheduled and j.last_status == "Success"
                            and j.runner == "pg-platform runner" for j in statuses)
    assert health.reasons(health.probe(dsn)) == []
