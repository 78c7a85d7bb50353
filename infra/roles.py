"""Database roles with one job each, and the bootstrap step that makes them.

The bootstrap step is the only thing that connects as the bootstrap
superuser (break-glass, never an output that migrations or apps use). It
creates the roles, the platform database owned by the owner role, the
extensions that need a superuser, and revokes what PostgreSQL grants PUBLIC by
default that a hostile tenant could use. Everything else (migrations, the
SECURITY DEFINER functions, tenant roles) runs as the owner role, which is not
a superuser. The table of roles and privileges is in docs/security.md.

Idempotent: it creates what is missing and resets what drifted, so it runs on
every update of the database resource.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from infra import scram

logger = logging.getLogger(__name__)

BREAK_GLASS = "postgres"
MONITOR = "platform_monitor"
TENANT_ADMIN = "tenant_admin"
TENANT_GROUP = "platform_tenant"
# PgBouncer's auth_user: it may only call the tenant verifier lookup
# (sql/schema/V0012__pooler_auth.sql), so run-time tenants log in through the pooler.
POOLER_AUTH = "pgbouncer_auth"

# Extensions CREATE EXTENSION refuses to a non-superuser; pgcrypto is trusted,
# so the owner's own migration (sql/schema/V0001) creates it.
SUPERUSER_EXTENSIONS = ("pg_stat_statements", "postgis", "timescaledb")
# Large-object creation is open to PUBLIC by default: a tenant could store
# data outside its schema, unseen by its quotas and by RLS.
LO_FUNCTIONS = ("lo_creat(integer)", "lo_create(oid)", "lo_from_bytea(oid, bytea)",
                 "lo_import(text)", "lo_import(text, oid)")

_COMMON = "NOSUPERUSER NOBYPASSRLS"
# Keys of the passwords the database resource carries, as `<key>_password`/`<key>_role`.
PASSWORD_KEYS = ("owner", "app", "replication", "monitor", "tenant_admin", "pooler_auth")


@dataclass(frozen=True)
class RoleSpec:
    """One login role: its attributes beyond _COMMON and the groups it joins."""

    name: str
    password: str
    attributes: str = "NOCREATEDB NOCREATEROLE NOREPLICATION"
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bootstrap:
    """What the bootstrap superuser sets up; passwords are plain here, verifiers on the wire."""

    database: str
    owner: RoleSpec
    app: RoleSpec
    replication: RoleSpec | None = None
    monitor: RoleSpec | None = None
    tenant_admin: RoleSpec | None = None
    pooler_auth: RoleSpec | None = None
    extensions: tuple[str, ...] = SUPERUSER_EXTENSIONS
    extra_connect: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, database: str, passwords: Mapping[str, str], names: Mapping[str, str],
           extensions: tuple[str, ...] = SUPERUSER_EXTENSIONS) -> Bootstrap:
        """`names` and `passwords` keyed as PASSWORD_KEYS."""
        def spec(key: str, attributes: str, member_of: tuple[str, ...] = ()) -> RoleSpec | None:
            if key not in passwords:
                return None
            return RoleSpec(names[key], passwords[key], attributes, member_of)

        # CREATEDB: the backup drill restores into a scratch database it creates.
        # pg_read_all_settings: V0001 reads shared_preload_libraries to tell a
        # preloaded TimescaleDB from one that is only installed.
        owner = spec("owner", "CREATEDB CREATEROLE NOREPLICATION", ("pg_read_all_settings",))
        app = spec("app", "NOCREATEDB NOCREATEROLE NOREPLICATION")
        assert owner is not None and app is not None, "owner and app passwords are required"
        return cls(database=database, owner=owner, app=app,
                   replication=spec("replication", "NOCREATEDB NOCREATEROLE REPLICATION"),
                   monitor=spec("monitor", "NOCREATEDB NOCREATEROLE NOREPLICATION",
                                ("pg_monitor",)),
                   tenant_admin=spec("tenant_admin", "NOCREATEDB NOCREATEROLE NOREPLICATION"),
                   pooler_auth=spec("pooler_auth", "NOCREATEDB NOCREATEROLE NOREPLICATION"),
                   extensions=extensions)

    def roles(self) -> list[RoleSpec]:
        return [r for r in (self.owner, self.app, self.replication, self.monitor,
                            self.tenant_admin, self.pooler_auth) if r is not None]


def _ensure_role(conn: psycopg.Connection[Any], role: RoleSpec) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,)).fetchone()
    conn.execute(sql.SQL("{} ROLE {} LOGIN {} {} PASSWORD {}").format(
        sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role.name),
        sql.SQL(_COMMON), sql.SQL(role.attributes),
        sql.Literal(scram.verifier(role.name, role.password))))
    for group in role.member_of:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group),
                                                      sql.Identifier(role.name)))


def _ensure_group(conn: psycopg.Connection[Any], name: str) -> None:
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN " + _COMMON +
                             " NOCREATEDB NOCREATEROLE NOREPLICATION").format(
                                 sql.Identifier(name)))


def cluster_step(conn: psycopg.Connection[Any], spec: Bootstrap) -> None:
    """Roles and the database; `conn` is the superuser's, autocommit, any database."""
    for role in spec.roles():
        if role.name == conn.info.user:
            continue  # a provider-version-2 stack: its owner is the superuser itself
        _ensure_role(conn, role)
    _ensure_group(conn, TENANT_GROUP)
    if spec.tenant_admin is None:
        _ensure_group(conn, TENANT_ADMIN)
    db = sql.Identifier(spec.database)
    owner = sql.Identifier(spec.owner.name)
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        (spec.database,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, owner))
    else:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, owner))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    # CONNECT only: TEMPORARY stays the owner's (see sql/schema/V0005).
    connect = [spec.app.name, TENANT_GROUP, TENANT_ADMIN,
               *(r.name for r in (spec.monitor, spec.pooler_auth) if r is not None),
               *spec.extra_connect]
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
        db, sql.SQL(", ").join(sql.Identifier(r) for r in connect)))
    conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(
        db, sql.SQL(", ").join(sql.Identifier(r) for r in (
            spec.app.name, TENANT_GROUP, TENANT_ADMIN,
            *(r.name for r in (spec.monitor, spec.pooler_auth) if r is not None)))))
    # `\c postgres` and template1 are no way out of the platform database.
    for other in ("postgres", "template1"):
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(other)))
    if spec.monitor is not None:
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE postgres TO {}").format(
            sql.Identifier(spec.monitor.name)))


def database_step(conn: psycopg.Connection[Any], spec: Bootstrap) -> None:
    """Inside the platform database, still as the superuser: extensions and revokes."""
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for fn in LO_FUNCTIONS:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{fn} FROM PUBLIC")
    preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
    available = {str(r[0]) for r in conn.execute(
        "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
        (list(spec.extensions),))}
    for ext in spec.extensions:
        if ext not in available or (ext == "timescaledb" and ext not in preload):
            logger.info("extension %s not installed or not preloaded; skipped", ext)
            continue
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone():
        # Other tenants' statements are no one's business but the monitoring role's.
        conn.execute("REVOKE ALL ON public.pg_stat_statements, public.pg_stat_statements_info "
                     "FROM PUBLIC")
        conn.execute("REVOKE EXECUTE ON FUNCTION public.pg_stat_statements(boolean) FROM PUBLIC")
        conn.execute("GRANT SELECT ON public.pg_stat_statements, "
                     "public.pg_stat_statements_info TO pg_read_all_stats")
        conn.execute("GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean) "
                     "TO pg_read_all_stats")


def run(superuser_dsn_for: Any, spec: Bootstrap) -> None:
    """Both steps; `superuser_dsn_for(dbname)` gives the break-glass DSN for a database."""
    with psycopg.connect(superuser_dsn_for("postgres"), autocommit=True,
                         connect_timeout=10) as conn:
        cluster_step(conn, spec)
    with psycopg.connect(superuser_dsn_for(spec.database), autocommit=True,
                         connect_timeout=10) as conn:
        database_step(conn, spec)
    logger.info("bootstrap: roles %s and database %s ready",
                ", ".join(r.name for r in spec.roles()), spec.database)
