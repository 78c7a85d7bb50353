"""PgBouncer's auth file on the local stack: the platform's logins, no tenant's.

Tenant roles, from the config or made at run time, are not listed: PgBouncer
looks them up through its auth_user (infra/render/pooler_auth.py), so the file
stays the same size at 10,000 tenants and a run-time tenant needs no re-render.
The file holds SCRAM verifiers, and the auth_user's password, which PgBouncer
needs to log in as it: it is a secret file (0600, in the stack's secrets folder).
"""

from __future__ import annotations

from infra import render, roles, scram
from infra.config import PlatformConfig
from infra.render.pooler_auth import auth_user_entry


def pooler_users(cfg: PlatformConfig, app_password: str, admin_password: str,
                 tenant_admin_password: str | None = None) -> dict[str, str]:
    """The verifier entries: the app role, the console's admin user and tenant_admin."""
    users = render.pooler_users(cfg, app_password, admin_password)
    if tenant_admin_password:
        users[roles.TENANT_ADMIN] = scram.verifier(roles.TENANT_ADMIN, tenant_admin_password)
    return users


def auth_file(cfg: PlatformConfig, app_password: str, admin_password: str,
              tenant_admin_password: str, pooler_auth_password: str) -> str:
    """The whole auth file: the verifiers, then the auth_user's own entry."""
    return (render.userlist_txt(pooler_users(cfg, app_password, admin_password,
                                             tenant_admin_password))
            + auth_user_entry(roles.POOLER_AUTH, pooler_auth_password))
