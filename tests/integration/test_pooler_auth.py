"""Run-time tenants log in through PgBouncer by auth_query, and the lookup answers for
tenant roles only.

Real processes: the session's cluster (PostgreSQL, two replicas, PgBouncer in
transaction mode with TLS, roles by infra/roles.py) and the project's sql/
applied by the engine as the owner role. A tenant made at run time by
tenant_admin (public.create_tenant, through the pooler) gets its role at the
next apply and then logs in through PgBouncer with SCRAM over verify-full TLS,
with no new auth file and no reload. PgBouncer's auth_user may call
pgplatform_auth.tenant_login and nothing else; the function returns no
verifier for break-glass, the owner or any role that is not a plain tenant
role, even when someone plants a row for it: it answers them with a mock
verifier that matches no password, so a refused login looks the same whether
the role exists or not (no tenant slug can be probed through the pooler).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from infra import roles
from infra.dsn import conninfo
from infra.hostctl import wait_until
from infra.schema import credentials, engine
from tests.integration.conftest import Cluster
from tests.support import one, session

ROOT = Path(__file__).resolve().parents[2]
QUOTA = 5000


def verified(cluster: Cluster, dsn: str) -> str:
    return conninfo(dsn, sslmode="verify-full",
                    sslrootcert=cluster.tls.ca_file if cluster.tls else None)




def refused(dsn: str, match: str) -> None:
    """`dsn` cannot log in; PgBouncer's answer is exactly `match` (the same text for an
    unknown user and a wrong password: nothing to probe)."""
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(dsn, connect_timeout=15).close()
    assert str(caught.value).rstrip().endswith(f"FATAL:  {match}"), str(caught.value)


def apply(cluster: Cluster) -> None:
    engine.apply(cluster.owner_dsn(), engine.Options.build(
        ROOT / "sql", app_role=cluster.cfg.postgres.app_role,
        tenant_key=cluster.passwords["tenant_key"], tenant_quota=QUOTA))


def pooled(cluster: Cluster, user: str, password: str) -> str:
    pg = cluster.cfg.postgres
    return verified(cluster, cluster.dsn(pg.listen_address, cluster.cfg.pooler.port, user,
                                         password, pg.database))


def auth_user(cluster: Cluster, host: str | None = None, port: int | None = None) -> str:
    """PgBouncer's auth_user, directly on a server (as PgBouncer itself logs in)."""
    pg = cluster.cfg.postgres
    return verified(cluster, cluster.dsn(host or pg.listen_address, port or pg.port,
                                         roles.POOLER_AUTH, cluster.passwords["pooler_auth"],
                                         pg.database))


def lookup(cluster: Cluster, user: str) -> list[tuple[Any, ...]]:
    with session(auth_user(cluster)) as conn:
        return conn.execute("SELECT * FROM pgplatform_auth.tenant_login(%s)", (user,)).fetchall()


def stored(cluster: Cluster, user: str) -> str | None:
    """The server's own verifier of `user` (pg_authid is break-glass's to read)."""
    found = one(cluster.superuser_dsn(), "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                (user,))
    return str(found) if found is not None else None


def is_mock(cluster: Cluster, user: str) -> bool:
    """The lookup's answer for `user` is its mock: one row, stable, and not the role's
    real verifier (nor any tenant's stored one)."""
    rows = lookup(cluster, user)
    if len(rows) != 1 or rows != lookup(cluster, user) or rows[0][0] != user[:63]:
        return False
    verifier = str(rows[0][1])
    known = one(cluster.owner_dsn(), "SELECT count(*) FROM pgplatform_auth.tenant_logins "
                                     "WHERE verifier = %s", (verifier,))
    return verifier.startswith("SCRAM-SHA-256$") and verifier != stored(cluster, user) \
        and known == 0


@pytest.fixture(scope="module")
def runtime_slug(cluster: Cluster) -> str:
    """A tenant made at run time by tenant_admin through the pooler, then one apply."""
    apply(cluster)
    slug = f"rt{secrets.token_hex(4)}"
    with session(pooled(cluster, roles.TENANT_ADMIN, cluster.passwords["tenant_admin"])) as c:
        c.execute("SELECT public.create_tenant(%s, %s)", (slug, "Run-time tenant"))
    dsn = credentials.dsn(pooled(cluster, "x", "x"), cluster.passwords["tenant_key"], slug)
    # Registered, not yet applied: no role, so no login; the same answer as a wrong password.
    refused(dsn, "SASL authentication failed")
    apply(cluster)
    return slug


def test_a_run_time_tenant_logs_in_through_pgbouncer_with_scram_and_tls(
        cluster: Cluster, runtime_slug: str) -> None:
    key = cluster.passwords["tenant_key"]
    dsn = credentials.dsn(pooled(cluster, "x", "x"), key, runtime_slug)
    assert "verify-full" in dsn
    with session(dsn) as conn:
        assert conn.pgconn.ssl_in_use  # client to PgBouncer: TLS, certificate verified
        who = conn.execute("SELECT current_user, public.current_tenant_id() IS NOT NULL, "
                           "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
                           ).fetchone()
        conn.execute(sql.SQL("INSERT INTO {}.users (email) VALUES ('a@example.org')").format(
            sql.Identifier(credentials.role_for(runtime_slug))))
    # Its own role, its own registry row, and PgBouncer's server connection over TLS too.
    assert who == (credentials.role_for(runtime_slug), True, True)
    ini = Path(cluster.outs["pooler"]["ini_path"]).read_text()
    assert "auth_type = scram-sha-256" in ini and f"auth_user = {roles.POOLER_AUTH}" in ini
    # The auth file never learnt it: the lookup did.
    assert credentials.role_for(runtime_slug) not in cluster.outs["pooler"]["userlist"]
    # The lookup gives the server's own verifier (same salt and iterations: pass-through).
    assert lookup(cluster, credentials.role_for(runtime_slug)) == [
        (credentials.role_for(runtime_slug), credentials.verifier(key, runtime_slug))]
    refused(conninfo(dsn, password="wrong-" + secrets.token_hex(8)), "SASL authentication failed")
    refused(conninfo(dsn, sslmode="disable"), "SSL required")


def test_the_lookup_answers_for_no_role_but_a_plain_tenant_role(cluster: Cluster,
                                                                runtime_slug: str) -> None:
    pg = cluster.cfg.postgres
    others = [roles.BREAK_GLASS, pg.owner_role, pg.app_role, pg.replication_role,
              roles.MONITOR, roles.TENANT_ADMIN, roles.POOLER_AUTH, roles.TENANT_GROUP,
              "pg_monitor", "tenant_nosuchtenant", credentials.role_for(runtime_slug) + "x",
              "' OR true --", ""]
    assert {u: is_mock(cluster, u) for u in others} == dict.fromkeys(others, True)
    assert all(stored(cluster, u) for u in others[:7])  # real roles with real verifiers


def test_a_planted_row_for_a_privileged_role_returns_nothing(cluster: Cluster,
                                                            runtime_slug: str) -> None:
    """The owner (or whoever can write the table) cannot make the lookup hand out a
    verifier of a role that is more than a tenant: the table refuses non-tenant names,
    and the function checks the role itself."""
    owner = cluster.owner_dsn()
    fake = f"tenant_pl{secrets.token_hex(3)}"
    with session(owner) as conn:
        with pytest.raises(errors.CheckViolation):
            conn.execute("INSERT INTO pgplatform_auth.tenant_logins VALUES (%s, %s)",
                         (cluster.cfg.postgres.owner_role,
                          credentials.verifier(cluster.passwords["tenant_key"], "x")))
        slug = fake.removeprefix("tenant_")
        conn.execute("INSERT INTO public.tenants (slug, name) VALUES (%s, 'planted')", (slug,))
        verifier = credentials.verifier(cluster.passwords["tenant_key"], slug)
        planted = {
            "CREATEDB": sql.SQL("CREATE ROLE {} LOGIN CREATEDB IN ROLE platform_tenant"),
            "pg_read_all_data": sql.SQL("CREATE ROLE {} LOGIN IN ROLE platform_tenant, "
                                        "pg_read_all_data"),
            "not a tenant member": sql.SQL("CREATE ROLE {} LOGIN"),
            "NOLOGIN": sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE platform_tenant"),
        }
        found = {}
        try:
            conn.execute("INSERT INTO pgplatform_auth.tenant_logins VALUES (%s, %s)",
                         (fake, verifier))
            for what, create in planted.items():
                conn.execute(create.format(sql.Identifier(fake)))
                found[what] = is_mock(cluster, fake)
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(fake)))
            # A plain tenant role, but its tenant is deactivated: nothing either.
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE platform_tenant").format(
                sql.Identifier(fake)))
            assert lookup(cluster, fake) == [(fake, verifier)]  # the control: it does answer
            conn.execute("UPDATE public.tenants SET is_active = false WHERE slug = %s", (slug,))
            found["inactive tenant"] = is_mock(cluster, fake)
        finally:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(fake)))
            conn.execute("DELETE FROM pgplatform_auth.tenant_logins WHERE role_name = %s",
                         (fake,))
            conn.execute("DELETE FROM public.tenants WHERE slug = %s", (slug,))
    assert found == dict.fromkeys([*planted, "inactive tenant"], True)


def test_the_auth_user_can_call_the_lookup_and_nothing_else(cluster: Cluster,
                                                           runtime_slug: str) -> None:
    with session(auth_user(cluster)) as conn:
        for query in ("SELECT * FROM pgplatform_auth.tenant_logins",
                      "SELECT count(*) FROM public.tenants",
                      "SELECT rolpassword FROM pg_authid",
                      f"SELECT count(*) FROM {credentials.role_for(runtime_slug)}.users",
                      "CREATE TEMP TABLE t (x int)",
                      "CREATE TABLE public.t (x int)"):
            with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
                conn.execute(query)
        attrs = conn.execute("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, "
                             "rolreplication FROM pg_roles WHERE rolname = current_user"
                             ).fetchone()
        groups = conn.execute("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r "
                              "ON r.oid = m.member WHERE r.rolname = current_user").fetchone()
    assert attrs == (False, False, False, False, False) and groups == (0,)
    # The function is PgBouncer's only: tenants, the app and tenant_admin cannot call it.
    key = cluster.passwords["tenant_key"]
    for dsn in (credentials.dsn(cluster.owner_dsn(), key, runtime_slug),
                pooled(cluster, cluster.cfg.postgres.app_role, cluster.passwords["app"]),
                pooled(cluster, roles.TENANT_ADMIN, cluster.passwords["tenant_admin"])):
        with session(verified(cluster, dsn)) as conn, \
                pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pgplatform_auth.tenant_login(%s)",
                         (cluster.cfg.postgres.owner_role,))


def test_break_glass_and_the_owner_cannot_log_in_through_the_pooler(cluster: Cluster) -> None:
    """Not in the auth file and refused by the lookup: PgBouncer admits neither, with
    their right passwords, and says just what it says to a wrong password."""
    for user, password in ((roles.BREAK_GLASS, cluster.passwords["superuser"]),
                           (cluster.cfg.postgres.owner_role, cluster.passwords["owner"]),
                           (roles.MONITOR, cluster.passwords["monitor"]),
                           (cluster.cfg.postgres.replication_role,
                            cluster.passwords["replication"])):
        refused(pooled(cluster, user, password), "SASL authentication failed")


def test_the_read_only_pool_looks_tenants_up_on_the_replicas(cluster: Cluster,
                                                            runtime_slug: str) -> None:
    """auth_query runs in the database the client asks for: `<db>_ro` is the replicas'."""
    dsn = credentials.dsn(pooled(cluster, "x", "x"), cluster.passwords["tenant_key"],
                          runtime_slug, f"{cluster.cfg.postgres.database}_ro")
    role = credentials.role_for(runtime_slug)
    with session(cluster.owner_dsn()) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    for i in (1, 2):  # the apply that made the role has been replayed on both replicas
        replica = cluster.replica_dsn(i)
        assert wait_until(lambda r=replica: bool(one(  # type: ignore[misc]
            r, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))), 30)
    with session(dsn) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_user").fetchone() == (
            True, role)
