"""Hostile tenants: every attack of issue #12, as a tenant role, the app role and tenant_admin.

Real processes: the session's cluster (tests/integration/conftest.py: primary,
two replicas and PgBouncer in transaction mode, TLS everywhere, roles made by
the bootstrap step of infra/roles.py) with the project's own sql/ applied by
the engine as the owner role (not a superuser), tenants ``acme`` and
``globex`` and their login roles. Every attack must fail; each test asserts
the exact error class, or, where PostgreSQL raises nothing by design (LISTEN,
setting another tenant's id), that nothing leaks. Data is made by hypothesis,
and tenant A sees 0 rows of tenant B in every table it can reach.
"""

from __future__ import annotations

import contextlib
import select
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors, sql

from infra import roles
from infra.backends.local_pooler import PoolerProvider
from infra.dsn import conninfo
from infra.schema import credentials, engine
from tests.integration.conftest import Cluster
from tests.support import one, session

ROOT = Path(__file__).resolve().parents[2]
A, B = "acme", "globex"
QUOTA = 6  # acme, globex and room for the run-time tenants these tests make
TENANT_TABLES = ("users", "metrics_sessions", "tool_metrics", "dashboard_configs")


@dataclass
class Hostile:
    cluster: Cluster
    ids: dict[str, str]

    @property
    def key(self) -> str:
        return self.cluster.passwords["tenant_key"]

    def _verify(self, dsn: str) -> str:
        ca = self.cluster.tls.ca_file if self.cluster.tls else None
        return conninfo(dsn, sslmode="verify-full", sslrootcert=ca)

    def tenant(self, slug: str, *, pooler: bool = False, db: str | None = None) -> str:
        base = self.cluster.pooler_dsn() if pooler else self.cluster.owner_dsn()
        return self._verify(credentials.dsn(base, self.key, slug, db))

    def app(self, *, pooler: bool = False) -> str:
        pg = self.cluster.cfg.postgres
        if pooler:
            return self._verify(self.cluster.pooler_dsn())
        return self._verify(self.cluster.dsn(pg.listen_address, pg.port, pg.app_role,
                                             self.cluster.passwords["app"], pg.database))

    def tenant_admin(self) -> str:
        pg = self.cluster.cfg.postgres
        return self._verify(self.cluster.dsn(pg.listen_address, self.cluster.cfg.pooler.port,
                                             roles.TENANT_ADMIN,
                                             self.cluster.passwords["tenant_admin"],
                                             pg.database))

    def owner(self) -> str:
        return self._verify(self.cluster.owner_dsn())

    def superuser(self) -> str:
        return self._verify(self.cluster.superuser_dsn())




@pytest.fixture(scope="module")
def hostile(cluster: Cluster) -> Iterator[Hostile]:
    """The project's SQL, two config tenants with roles, and PgBouncer knowing them."""
    tenants = [{"slug": A, "name": "Acme", "plan": "standard"},
               {"slug": B, "name": "Globex", "plan": "premium"}]
    opts = engine.Options.build(ROOT / "sql", tenants, app_role=cluster.cfg.postgres.app_role,
                                tenant_key=cluster.passwords["tenant_key"],
                                tenant_quota=QUOTA)
    engine.apply(cluster.owner_dsn(), opts)
    with_tenants = cluster.with_settings(tenants=tenants)
    olds = cluster.outs["pooler"]
    news = cluster.pooler_props(with_tenants, cluster.userlist(with_tenants), cluster.tls)
    cluster.outs["pooler"] = dict(PoolerProvider().update("", olds, news).outs or {})
    with session(cluster.owner_dsn()) as conn:
        ids = {str(r[0]): str(r[1]) for r in conn.execute("SELECT slug, id FROM public.tenants")}
    try:
        yield Hostile(cluster=cluster, ids=ids)
    finally:  # the session's pooler as the other modules expect it
        PoolerProvider().update("", cluster.outs["pooler"], olds)
        cluster.outs["pooler"] = olds


def expect(exc: type[Exception], dsn: str, query: str | sql.Composed,
           params: Any = None) -> str:
    """Run `query` on a fresh session and return the message of the expected error."""
    with session(dsn) as conn, pytest.raises(exc) as err:
        conn.execute(query, params)
    assert type(err.value) is exc, f"{type(err.value).__name__}: {err.value}"  # not a subclass
    return str(err.value)


# --- the setup itself ---------------------------------------------------------------------

def test_no_role_of_the_platform_is_a_superuser_except_break_glass(hostile: Hostile) -> None:
    pg = hostile.cluster.cfg.postgres
    names = [pg.owner_role, pg.app_role, pg.replication_role, roles.MONITOR, roles.TENANT_ADMIN,
             roles.TENANT_GROUP, roles.POOLER_AUTH, credentials.role_for(A),
             credentials.role_for(B)]
    with session(hostile.superuser()) as conn:
        got = {r[0]: r[1:] for r in conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls, rolreplication FROM pg_roles "
            "WHERE rolname = ANY(%s)", (names,))}
        # The platform's own SECURITY DEFINER functions (not an extension's members).
        owners = {(r[0], r[1]) for r in conn.execute(
            "SELECT pg_get_userbyid(p.proowner), p.oid::regprocedure::text FROM pg_proc p "
            "WHERE p.prosecdef AND p.pronamespace IN ('public'::regnamespace, "
            "'pgplatform_auth'::regnamespace) "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
            "AND d.objid = p.oid AND d.deptype = 'e')")}
    assert set(got) == set(names)
    assert {n for n, (sup, _, _) in got.items() if sup} == set()
    assert {n for n, (_, byp, _) in got.items() if byp} == set()
    assert {n for n, (_, _, rep) in got.items() if rep} == {pg.replication_role}
    assert owners == {(pg.owner_role, "audit_tenant_change()"),
                      (pg.owner_role, "create_tenant(text,text,text,text)"),
                      (pg.owner_role, "current_tenant_id()"),
                      (pg.owner_role, "pgplatform_auth.tenant_login(text)")}


def test_each_tenant_role_logs_in_and_sees_its_own_id(hostile: Hostile) -> None:
    for slug in (A, B):
        for pooler in (False, True):
            assert one(hostile.tenant(slug, pooler=pooler),
                       "SELECT public.current_tenant_id()::text") == hostile.ids[slug]


# --- cross-tenant reads and writes --------------------------------------------------------

@pytest.mark.parametrize("table", TENANT_TABLES)
def test_attack_read_another_tenants_schema(hostile: Hostile, table: str) -> None:
    q = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier("tenant_" + B), sql.Identifier(table))
    assert "permission denied for schema" in expect(errors.InsufficientPrivilege,
                                                    hostile.tenant(A), q)


@pytest.mark.parametrize("verb", ["INSERT INTO tenant_globex.users (email) VALUES ('x@y')",
                                  "UPDATE tenant_globex.users SET email = 'x'",
                                  "DELETE FROM tenant_globex.users",
                                  "TRUNCATE tenant_globex.users"])
def test_attack_write_another_tenants_schema(hostile: Hostile, verb: str) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A, pooler=True), verb)


def test_attack_set_another_tenants_id(hostile: Hostile) -> None:
    """The setting is the app role's mode only; for a tenant role it changes nothing."""
    with session(hostile.tenant(A)) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (hostile.ids[B],))
        assert conn.execute("SELECT public.current_tenant_id()::text").fetchone() == (
            hostile.ids[A],)
        assert conn.execute("SELECT slug FROM public.tenants").fetchall() == [(A,)]


def test_attack_read_shared_base_tables(hostile: Hostile) -> None:
    for table in ("public.events", "public.tenant_audit", "public.platform_limits",
                  "public.events_hourly"):
        expect(errors.InsufficientPrivilege, hostile.tenant(A), f"SELECT * FROM {table}")


def test_attack_write_events_for_another_tenant(hostile: Hostile) -> None:
    """The events view checks every new row against the caller's own tenant."""
    for pooler in (False, True):
        expect(errors.WithCheckOptionViolation, hostile.tenant(A, pooler=pooler),
               "INSERT INTO public.tenant_events (tenant_id, kind) VALUES (%s, 'forged')",
               (hostile.ids[B],))


def test_attack_read_the_engine_history(hostile: Hostile) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A),
           "SELECT * FROM pgplatform.schema_history")


# --- temporary objects: hijacks and pooled-connection capture -----------------------------

@pytest.mark.parametrize("stmt", [
    "CREATE TEMP TABLE users (email text)",
    "CREATE DOMAIN pg_temp.uuid AS text CHECK (true)",
    "CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT NULL'",
    "CREATE OPERATOR pg_temp.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = uuid_ne)",
])
@pytest.mark.parametrize("actor", ["tenant", "app", "tenant_admin"])
def test_attack_temporary_objects_are_refused(hostile: Hostile, stmt: str, actor: str) -> None:
    dsn = {"tenant": hostile.tenant(A, pooler=True), "app": hostile.app(pooler=True),
           "tenant_admin": hostile.tenant_admin()}[actor]
    assert "temporary" in expect(errors.InsufficientPrivilege, dsn, stmt)


def test_attack_temp_domain_hijack_of_create_tenant_fails_even_with_temporary(
        hostile: Hostile) -> None:
    """Defence in depth: with TEMPORARY granted on purpose, pg_temp is still searched last."""
    db = sql.Identifier(hostile.cluster.cfg.postgres.database)
    with session(hostile.superuser()) as su:
        su.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO tenant_admin").format(db))
    try:
        with session(hostile.tenant_admin()) as conn, conn.transaction():
            conn.execute("CREATE FUNCTION pg_temp.hijack(text) RETURNS boolean LANGUAGE plpgsql "
                         "AS $$ BEGIN RAISE EXCEPTION 'hijacked as %', current_user; END $$")
            conn.execute("CREATE DOMAIN pg_temp.uuid AS text CHECK (pg_temp.hijack(VALUE))")
            conn.execute("CREATE DOMAIN pg_temp.text AS pg_catalog.text "
                         "CHECK (pg_temp.hijack(VALUE))")
            conn.execute("CREATE TEMP TABLE tenants (slug text)")
            conn.execute("CREATE FUNCTION pg_temp.count(anyelement) RETURNS bigint "
                         "LANGUAGE sql AS 'SELECT 0::bigint'")
            # A temp operator for the quota check (bigint >= integer) that would raise.
            conn.execute("CREATE FUNCTION pg_temp.ge(bigint, integer) RETURNS boolean "
                         "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked as %', "
                         "current_user; END $$")
            conn.execute("CREATE OPERATOR pg_temp.>= (LEFTARG = bigint, RIGHTARG = integer, "
                         "FUNCTION = pg_temp.ge)")
            slug = f"hj{uuid.uuid4().hex[:8]}"
            row = conn.execute("SELECT public.create_tenant(%s, 'Hijack')", (slug,)).fetchone()
            assert row and uuid.UUID(str(row[0]))
            assert conn.execute("SELECT count(*) FROM pg_temp.tenants").fetchone() == (0,)
    finally:
        with session(hostile.superuser()) as su:
            su.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM tenant_admin").format(db))


def test_attack_temp_table_capture_through_pgbouncer_transaction_mode(hostile: Hostile) -> None:
    """The planted temp table of the finding cannot be made by any pooled client."""
    with session(hostile.app(pooler=True)) as planter:
        with pytest.raises(errors.InsufficientPrivilege):
            planter.execute("CREATE TEMP TABLE users (id uuid, email text)")
        # A victim on the same pool then writes where it means to, and only there.
        with session(hostile.app(pooler=True)) as victim, victim.transaction():
            victim.execute("SELECT set_config('search_path', 'tenant_globex, public', true)")
            assert victim.execute("SELECT count(*) FROM pg_class "
                                  "WHERE relnamespace = pg_my_temp_schema()").fetchone() == (0,)
            victim.execute("INSERT INTO users (email) VALUES ('victim@globex')")
            assert victim.execute("SELECT to_regclass('users') = 'tenant_globex.users'::regclass"
                                  ).fetchone() == (True,)


# --- the registry and tenant creation -----------------------------------------------------

def test_attack_app_calls_create_tenant_on_an_existing_slug(hostile: Hostile) -> None:
    msg = expect(errors.InsufficientPrivilege, hostile.app(),
                 "SELECT public.create_tenant('globex', 'Mine', 'free')")
    assert hostile.ids[B] not in msg


def test_attack_tenant_calls_create_tenant(hostile: Hostile) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A),
           "SELECT public.create_tenant('evil', 'Evil')")


def test_attack_tenant_admin_recreates_an_existing_slug_and_learns_nothing(
        hostile: Hostile) -> None:
    with session(hostile.owner()) as conn:
        before = conn.execute("SELECT name, subscription_plan, domain FROM public.tenants "
                              "WHERE slug = %s", (B,)).fetchone()
    msg = expect(errors.UniqueViolation, hostile.tenant_admin(),
                 "SELECT public.create_tenant('globex', 'Taken over', 'free', 'evil.example')")
    assert msg.splitlines()[0] == "tenant not created: the slug or domain is not available"
    assert hostile.ids[B] not in msg and "Globex" not in msg and "premium" not in msg
    with session(hostile.owner()) as conn:
        after = conn.execute("SELECT name, subscription_plan, domain FROM public.tenants "
                             "WHERE slug = %s", (B,)).fetchone()
    assert after == before


def test_attack_tenant_admin_injects_through_the_slug(hostile: Hostile) -> None:
    expect(errors.CheckViolation, hostile.tenant_admin(),
           "SELECT public.create_tenant('x; DROP SCHEMA tenant_acme CASCADE', 'Evil')")


def test_attack_tenant_admin_reads_the_registry(hostile: Hostile) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant_admin(), "SELECT * FROM public.tenants")


def test_attack_listen_for_new_tenants(hostile: Hostile) -> None:
    """Anyone may LISTEN; the registry no longer notifies, so nothing arrives."""
    listeners = [psycopg.connect(dsn, autocommit=True) for dsn in
                 (hostile.tenant(A), hostile.app())]
    try:
        for conn in listeners:
            conn.execute("LISTEN pgplatform_tenants")
        with contextlib.suppress(errors.ProgramLimitExceeded):
            one(hostile.tenant_admin(), "SELECT public.create_tenant(%s, 'Listen')",
                (f"l{uuid.uuid4().hex[:8]}",))
        for conn in listeners:
            select.select([conn.fileno()], [], [], 1.0)
            conn.execute("SELECT 1")
            assert list(conn.notifies(timeout=0.5, stop_after=1)) == []
    finally:
        for conn in listeners:
            conn.close()


def test_attack_tenant_admin_past_the_quota(hostile: Hostile) -> None:
    with session(hostile.owner()) as conn:
        have = conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]  # type: ignore[index]
    with session(hostile.tenant_admin()) as conn:
        for i in range(QUOTA - int(have)):
            conn.execute("SELECT public.create_tenant(%s, 'Filler')",
                         (f"q{uuid.uuid4().hex[:8]}{i}",))
    msg = expect(errors.ProgramLimitExceeded, hostile.tenant_admin(),
                 "SELECT public.create_tenant('onemore', 'One more')")
    assert f"tenant quota reached ({QUOTA} tenants)" in msg


# --- escaping the role ---------------------------------------------------------------------

@pytest.mark.parametrize("target", ["platform_owner", "app", "tenant_globex", "postgres",
                                    "tenant_admin", "pg_execute_server_program"])
def test_attack_set_role(hostile: Hostile, target: str) -> None:
    msg = expect(errors.InsufficientPrivilege, hostile.tenant(A),
                 sql.SQL("SET ROLE {}").format(sql.Identifier(target)))
    assert "permission denied to set role" in msg


@pytest.mark.parametrize("actor", ["tenant", "app"])
def test_attack_set_session_authorization(hostile: Hostile, actor: str) -> None:
    dsn = hostile.tenant(A) if actor == "tenant" else hostile.app()
    expect(errors.InsufficientPrivilege, dsn, "SET SESSION AUTHORIZATION postgres")


@pytest.mark.parametrize("actor", ["tenant", "app"])
def test_attack_copy_program(hostile: Hostile, actor: str) -> None:
    dsn = hostile.tenant(A) if actor == "tenant" else hostile.app()
    msg = expect(errors.InsufficientPrivilege, dsn, "COPY (SELECT 1) TO PROGRAM 'id'")
    assert "pg_execute_server_program" in msg


def test_attack_copy_from_a_server_file(hostile: Hostile) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A),
           "COPY tenant_acme.users (email) FROM '/etc/passwd'")


@pytest.mark.parametrize("call", ["pg_read_file('/etc/passwd')", "pg_read_file('pg_hba.conf')",
                                  "pg_ls_dir('.')", "pg_stat_file('postgresql.conf')",
                                  "pg_read_binary_file('global/pg_control')"])
def test_attack_server_files(hostile: Hostile, call: str) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A), f"SELECT {call}")


@pytest.mark.parametrize("ext", ["dblink", "postgres_fdw", "file_fdw", "adminpack"])
def test_attack_create_extension(hostile: Hostile, ext: str) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A),
           sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))


@pytest.mark.parametrize("stmt", [
    "CREATE ROLE evil LOGIN PASSWORD 'x'",
    "ALTER ROLE tenant_acme BYPASSRLS",
    "ALTER ROLE tenant_acme CREATEROLE",
    "ALTER ROLE tenant_globex PASSWORD 'taken'",
    "GRANT platform_tenant TO tenant_globex",
    "CREATE SCHEMA evil",
    "CREATE TABLE tenant_acme.mine (i int)",
    "CREATE TABLE public.mine (i int)",
    "DROP TABLE tenant_acme.users",
    "ALTER TABLE tenant_acme.users DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE public.tenants DISABLE ROW LEVEL SECURITY",
    "SELECT * FROM pg_authid",
    "CREATE DATABASE evil",
])
def test_attack_ddl_and_role_changes(hostile: Hostile, stmt: str) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A), stmt)


def test_attack_terminate_another_tenants_session(hostile: Hostile) -> None:
    with session(hostile.tenant(B)) as victim:
        pid = victim.info.backend_pid
        expect(errors.InsufficientPrivilege, hostile.tenant(A), "SELECT pg_terminate_backend(%s)",
               (pid,))
        assert victim.execute("SELECT 1").fetchone() == (1,)


# --- other databases, large objects, statistics --------------------------------------------

@pytest.mark.parametrize("db", ["postgres", "template1"])
def test_attack_connect_to_another_database(hostile: Hostile, db: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(hostile.tenant(A, db=db), connect_timeout=10).close()


def test_attack_large_objects(hostile: Hostile) -> None:
    expect(errors.InsufficientPrivilege, hostile.tenant(A), "SELECT lo_create(0)")
    expect(errors.InsufficientPrivilege, hostile.app(), "SELECT lo_from_bytea(0, 'x')")
    with session(hostile.superuser()) as su:
        oid = su.execute("SELECT lo_from_bytea(0, 'globex secret')").fetchone()[0]  # type: ignore[index]
    try:
        msg = expect(errors.InsufficientPrivilege, hostile.tenant(A), "SELECT lo_get(%s)", (oid,))
        assert "large object" in msg
    finally:
        with session(hostile.superuser()) as su:
            su.execute("SELECT lo_unlink(%s)", (oid,))


def test_attack_pg_stat_statements_of_other_tenants(hostile: Hostile) -> None:
    one(hostile.tenant(B), "SELECT count(*) FROM tenant_globex.users WHERE email = 'secret@b'")
    for dsn in (hostile.tenant(A), hostile.app()):
        expect(errors.InsufficientPrivilege, dsn, "SELECT query FROM pg_stat_statements")
        expect(errors.InsufficientPrivilege, dsn, "SELECT * FROM pg_stat_statements(true)")


def test_attack_other_sessions_queries_in_pg_stat_activity(hostile: Hostile) -> None:
    with session(hostile.tenant(B)) as victim:
        victim.execute("SELECT 'globex secret query'")
        with session(hostile.tenant(A)) as conn:
            rows = conn.execute("SELECT query FROM pg_stat_activity WHERE usename = %s",
                                ("tenant_" + B,)).fetchall()
    assert rows and all(r[0] == "<insufficient privilege>" for r in rows)


# --- authentication and TLS ---------------------------------------------------------------

def test_attack_login_as_another_tenant_with_own_password(hostile: Hostile) -> None:
    pg = hostile.cluster.cfg.postgres
    for port in (pg.port, hostile.cluster.cfg.pooler.port):
        dsn = hostile.cluster.dsn(pg.listen_address, port, "tenant_" + B,
                                  credentials.password(hostile.key, A), pg.database)
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(hostile._verify(dsn), connect_timeout=10).close()


@pytest.mark.parametrize("who", ["tenant", "app", "owner", "superuser", "tenant_admin"])
def test_attack_sslmode_disable_is_refused(hostile: Hostile, who: str) -> None:
    dsn = {"tenant": hostile.tenant(A), "app": hostile.app(), "owner": hostile.owner(),
           "superuser": hostile.superuser(), "tenant_admin": hostile.tenant_admin()}[who]
    plain = conninfo(dsn, sslmode="disable", sslrootcert=None)
    # The server has no non-TLS pg_hba line; PgBouncer (tenant_admin's DSN) requires TLS.
    with pytest.raises(psycopg.OperationalError,
                       match=r"no pg_hba\.conf entry.*no encryption|SSL required"):
        psycopg.connect(plain, connect_timeout=10).close()


# --- hypothesis: tenant A sees 0 rows of tenant B in every table ---------------------------

EMAILS = st.lists(st.emails(), min_size=1, max_size=8, unique=True)
KINDS = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                         min_size=1, max_size=20), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a_emails=EMAILS, b_emails=EMAILS, a_kinds=KINDS, b_kinds=KINDS)
def test_tenant_a_sees_no_row_of_tenant_b_anywhere(hostile: Hostile, a_emails: list[str],
                                                   b_emails: list[str], a_kinds: list[str],
                                                   b_kinds: list[str]) -> None:
    marks = {A: f"a{uuid.uuid4().hex[:6]}", B: f"b{uuid.uuid4().hex[:6]}"}
    data = {A: (a_emails, a_kinds), B: (b_emails, b_kinds)}
    for slug, (emails, kinds) in data.items():
        with session(hostile.tenant(slug, pooler=True)) as conn, conn.transaction():
            for e in emails:
                uid = conn.execute(sql.SQL("INSERT INTO {}.users (email, display_name) "
                                           "VALUES (%s, %s) RETURNING id").format(
                    sql.Identifier("tenant_" + slug)), (f"{marks[slug]}.{e}", marks[slug])
                ).fetchone()[0]  # type: ignore[index]
                sid = conn.execute(sql.SQL("INSERT INTO {}.metrics_sessions (user_id, client) "
                                           "VALUES (%s, %s) RETURNING id").format(
                    sql.Identifier("tenant_" + slug)), (uid, marks[slug])).fetchone()[0]  # type: ignore[index]
                conn.execute(sql.SQL("INSERT INTO {}.tool_metrics (session_id, tool, "
                                     "duration_ms) VALUES (%s, %s, 1)").format(
                    sql.Identifier("tenant_" + slug)), (sid, marks[slug]))
                conn.execute(sql.SQL("INSERT INTO {}.dashboard_configs (owner_id, name) "
                                     "VALUES (%s, %s)").format(
                    sql.Identifier("tenant_" + slug)), (uid, marks[slug]))
        # Shared events go in through the app role's documented mode.
        with session(hostile.app(pooler=True)) as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (hostile.ids[slug],))
            conn.cursor().executemany(
                "INSERT INTO public.tenant_events (tenant_id, kind) VALUES (%s, %s)",
                [(hostile.ids[slug], f"{marks[slug]}:{k}") for k in kinds])
    for me, other in ((A, B), (B, A)):
        with session(hostile.tenant(me, pooler=True)) as conn:
            for table in TENANT_TABLES:
                text = conn.execute(sql.SQL("SELECT coalesce(string_agg(t::text, ' '), '') "
                                            "FROM {}.{} t").format(
                    sql.Identifier("tenant_" + me), sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
                assert marks[other] not in text
                assert marks[me] in text
            reg = conn.execute("SELECT slug FROM public.tenants").fetchall()
            assert reg == [(me,)]
            raw = conn.execute("SELECT coalesce(string_agg(kind, ' '), '') "
                               "FROM public.tenant_events").fetchone()[0]  # type: ignore[index]
            assert marks[other] not in raw
            assert all(f"{marks[me]}:{k}" in raw for k in data[me][1])
            # The roll-up may lag (a continuous aggregate is refreshed by its policy);
            # whatever it holds is the caller's own.
            hourly = conn.execute("SELECT coalesce(string_agg(kind, ' '), '') "
                                  "FROM public.tenant_events_hourly").fetchone()[0]  # type: ignore[index]
            assert marks[other] not in hourly
