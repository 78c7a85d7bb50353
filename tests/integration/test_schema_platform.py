"""The reference SQL in sql/ on a real PostgreSQL (PostGIS; TimescaleDB installed
but not preloaded, which is the fallback; tests/integration/test_timescaledb*.py
cover the preloaded path).

Covers tenant creation and update (config and run-time tenants), isolation
for the app role (RLS on the registry, security-barrier views over events),
the TimescaleDB fallback, and the Pulumi
dynamic provider's create/diff/read/update against the same database.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from infra.schema import engine
from infra.schema.files import MigrationSet
from infra.schema.resource import PROVIDER_VERSION, SchemaProvider
from tests.support import FreshDatabase

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
TENANTS = [{"slug": "acme", "name": "Acme Corp", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "standard"}]


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def app_role(fresh_db: FreshDatabase) -> Iterator[tuple[str, str]]:
    """A login app role unique to this test, dropped with what it was granted."""
    name, password = f"app_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    admin = fresh_db.server.superuser_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)))
    yield name, password
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_tenants_created_from_config_and_at_run_time_then_updated(
        fresh_db: FreshDatabase, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    o = engine.Options.build(sql_dir, TENANTS)
    first = engine.apply(fresh_db.dsn, o)
    assert first.tenants_created == ["tenant_acme", "tenant_globex"]
    tables = rows(fresh_db.dsn, "SELECT table_schema, table_name FROM information_schema.tables "
                                "WHERE table_schema LIKE 'tenant\\_%' ORDER BY 1, 2")
    expected = ["dashboard_configs", "metrics_sessions", "tool_metrics", "users"]
    assert [t for s, t in tables if s == "tenant_acme"] == expected
    assert [t for s, t in tables if s == "tenant_globex"] == expected
    assert rows(fresh_db.dsn, "SELECT slug, subscription_plan FROM tenants ORDER BY slug") == \
        [("acme", "premium"), ("globex", "standard")]

    # A tenant added at run time through the registry's function, and a new
    # tenant file: one survey finds all three tenants' work.
    rows(fresh_db.dsn, "SELECT public.create_tenant('initech', 'Initech', 'free')")
    (sql_dir / "tenant" / "V0100__user_locale.sql").write_text(
        "ALTER TABLE ${tenant_schema}.users ADD COLUMN locale text NOT NULL DEFAULT 'en';\n")
    renamed = [{**TENANTS[0], "plan": "enterprise"}, TENANTS[1]]
    o2 = engine.Options.build(sql_dir, renamed)
    p = engine.plan(fresh_db.dsn, o2)
    assert [t.slug for t in p.unregistered] == ["acme"]
    assert {w.schema: [m.script for m in w.pending] for w in p.tenant_work} == {
        "tenant_acme": ["V0100__user_locale.sql"],
        "tenant_globex": ["V0100__user_locale.sql"],
        "tenant_initech": ["V0001__tenant_template.sql", "V0002__tenant_role.sql",
                           "V0003__tenant_pooler_login.sql", "V0100__user_locale.sql"]}

    second = engine.apply(fresh_db.dsn, o2)
    assert second.tenants_created == ["tenant_initech"] and second.tenants_migrated == 3
    assert rows(fresh_db.dsn, "SELECT count(*) FROM information_schema.columns "
                              "WHERE column_name = 'locale' AND table_name = 'users'") == [(3,)]
    assert rows(fresh_db.dsn, "SELECT subscription_plan FROM tenants WHERE slug = 'acme'") == \
        [("enterprise",)]
    audit = rows(fresh_db.dsn, "SELECT t.slug, a.action FROM tenant_audit a "
                               "JOIN tenants t ON t.id = a.tenant_id ORDER BY a.id")
    assert audit == [("acme", "INSERT"), ("globex", "INSERT"), ("initech", "INSERT"),
                     ("acme", "UPDATE")]
    assert engine.plan(fresh_db.dsn, o2).is_noop
    assert not engine.apply(fresh_db.dsn, o2).changed

    # A bad slug cannot reach a schema name, even through the function.
    with pytest.raises(psycopg.errors.CheckViolation):
        rows(fresh_db.dsn, "SELECT public.create_tenant('x\"; DROP TABLE tenants; --', 'x', "
                           "'free')")


def test_rls_isolates_tenants_and_cannot_be_turned_off(
        fresh_db: FreshDatabase, app_role: tuple[str, str]) -> None:
    role, password = app_role
    engine.apply(fresh_db.dsn, engine.Options.build(SQL_DIR, TENANTS, app_role=role))
    ids = dict(rows(fresh_db.dsn, "SELECT slug, id::text FROM tenants"))
    rows(fresh_db.dsn, "INSERT INTO events (tenant_id, kind, value) "
                       "SELECT t.id, 'login', g FROM tenants t, generate_series(1, 5) g")
    app_dsn = fresh_db.server.server.dsn(role, password, fresh_db.name)
    with psycopg.connect(app_dsn) as conn:
        def as_tenant(slug: str, query: str) -> list[tuple[Any, ...]]:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (ids[slug],))
                return conn.execute(query).fetchall()

        assert as_tenant("acme", "SELECT count(*) FROM tenant_events") == [(5,)]
        assert as_tenant("acme", "SELECT count(*) FROM tenant_events WHERE tenant_id = "
                                 f"'{ids['globex']}'") == [(0,)]
        assert as_tenant("acme", "SELECT slug FROM tenants") == [("acme",)]
        assert as_tenant("globex", "SELECT sum(events) FROM tenant_events_hourly") == [(5,)]
        # Transaction-local: the next transaction (next pooled client) sees nothing.
        assert conn.execute("SELECT count(*) FROM tenant_events").fetchall() == [(0,)]
        conn.commit()
        with pytest.raises(psycopg.errors.WithCheckOptionViolation), conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (ids["acme"],))
            conn.execute("INSERT INTO tenant_events (tenant_id, kind) VALUES (%s, 'x')",
                         (ids["globex"],))
        # The base table is granted to nobody: no way around the view.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM events")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege,
                           match="would be affected by row-level security"):
            conn.execute("SET row_security = off")
            conn.execute("SELECT count(*) FROM tenants")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
            conn.execute("ALTER TABLE tenants DISABLE ROW LEVEL SECURITY")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM tenant_audit")
    assert rows(fresh_db.dsn, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                              "WHERE oid = 'tenants'::regclass") == [(True, True)]
    assert rows(fresh_db.dsn, "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = %s",
                (role,)) == [(False, False)]


def test_timescaledb_absent_fallback(fresh_db: FreshDatabase) -> None:
    engine.apply(fresh_db.dsn, engine.Options.build(SQL_DIR, []))
    exts = {r[0] for r in rows(fresh_db.dsn, "SELECT extname FROM pg_extension")}
    assert "timescaledb" not in exts  # installed here, but not preloaded
    assert {"pgcrypto", "postgis", "pg_stat_statements"} <= exts
    indexes = dict(rows(fresh_db.dsn, "SELECT indexname, indexdef FROM pg_indexes "
                                      "WHERE tablename = 'events'"))
    assert "USING brin (occurred_at)" in indexes["events_time_brin"]
    assert "USING gist (location)" in indexes["events_location"]
    assert rows(fresh_db.dsn, "SELECT relkind FROM pg_class "
                              "WHERE oid = 'events_hourly'::regclass") == [("v",)]
    # The policies track ran (and only noted the absence).
    assert rows(fresh_db.dsn, "SELECT count(*) FROM pgplatform.schema_history "
                              "WHERE script = 'R__timescaledb.sql'") == [(1,)]


def test_pulumi_provider_applies_diffs_and_refreshes(fresh_db: FreshDatabase) -> None:
    provider = SchemaProvider()
    props: dict[str, Any] = {
        "dsn": fresh_db.dsn, "sql_dir": str(SQL_DIR), "app_role": "app",
        "tenants": [{**t, "schema": f"tenant_{t['slug']}"} for t in TENANTS],
        "migrations": MigrationSet.load(SQL_DIR).fingerprint(),
        "provider_version": PROVIDER_VERSION, "target_id": "", "workers": 2}
    assert not provider.check({}, props).failures
    bad = {**props, "tenants": [{"slug": "Bad Slug", "name": "x", "plan": "free"}]}
    assert "Bad Slug" in provider.check({}, bad).failures[0].reason

    created = provider.create(props)
    outs = created.outs
    assert outs is not None
    assert outs["applied_migrations"] == sorted(props["migrations"])
    assert not provider.diff(created.id, outs, props).changes
    assert provider.diff(created.id, outs, {**props, "dsn": "rotated"}).changes is False

    grown = {**props, "migrations": {**props["migrations"], "schema/V9999__x.sql": "0" * 64}}
    assert provider.diff(created.id, outs, grown).changes

    # refresh: a tenant added at run time lacks its schema, so the refreshed
    # state no longer claims the tenant file is applied everywhere.
    rows(fresh_db.dsn, "SELECT public.create_tenant('initech', 'Initech', 'free')")
    read = provider.read(created.id, outs)
    assert read.outs is not None
    assert "tenant/V0001__tenant_template.sql" not in read.outs["migrations"]
    assert [t["slug"] for t in read.outs["tenants"]] == ["acme", "globex"]
    assert provider.diff(created.id, read.outs, props).changes
    updated = provider.update(created.id, read.outs, props)
    assert updated.outs is not None
    assert updated.outs["migrations"] == props["migrations"]
    assert rows(fresh_db.dsn, "SELECT to_regnamespace('tenant_initech') IS NOT NULL") == [(True,)]
    refreshed = provider.read(created.id, updated.outs).outs
    assert refreshed is not None and not provider.diff(created.id, refreshed, props).changes
