"""Tenant login roles as the #12 contract defines them, for the isolation tests.

Each tenant has a LOGIN role ``tenant_<slug>``, a member of the NOLOGIN group
``platform_tenant``; ``public.current_tenant_id()`` returns that tenant's id
for it (keyed on the role, never on a setting), ``app.tenant_id`` for the app
role, and NULL otherwise. Where security's migration (schema/V0005, which makes
the roles with each schema and rewrites the function) is not applied yet, this
creates the roles and installs the contract's function itself; once it is,
both steps find their work done and change nothing.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
from psycopg import sql

_CONTRACT_FUNCTION = """
CREATE OR REPLACE FUNCTION public.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN session_user = {app}::name
            THEN nullif(pg_catalog.current_setting('app.tenant_id', true), '')::uuid
        ELSE (SELECT t.id FROM public.tenants t
              WHERE t.schema_name = session_user::text AND t.is_active)
    END
$$"""


def ensure_tenant_roles(owner_dsn: str, app_role: str, slugs: list[str]) -> dict[str, str]:
    """Make (or re-password) ``tenant_<slug>`` for each slug; returns role -> password."""
    out: dict[str, str] = {}
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT prosecdef FROM pg_proc WHERE oid = "
                           "'public.current_tenant_id()'::regprocedure").fetchone()
        if row is not None and not row[0]:  # still the setting-keyed function of V0003
            conn.execute(sql.SQL(_CONTRACT_FUNCTION).format(app=sql.Literal(app_role)))
            conn.execute("REVOKE ALL ON FUNCTION public.current_tenant_id() FROM PUBLIC")
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION public.current_tenant_id() "
                                 "TO {}, platform_tenant").format(sql.Identifier(app_role)))
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        for slug in slugs:
            role, password = f"tenant_{slug}", secrets.token_urlsafe(18)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                  (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT platform_tenant TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(str(db[0])), sql.Identifier(role)))
            out[role] = password
    return out


def query(dsn: str, text: str, params: Any = None, *, tenant: str | None = None
          ) -> list[tuple[Any, ...]]:
    """Run one query; `tenant` sets app.tenant_id for this transaction only (the app mode)."""
    with psycopg.connect(dsn) as conn:
        if tenant is not None:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []
