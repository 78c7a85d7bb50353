"""PgBouncer's auth file users: the platform's roles and every config tenant's role.

Each tenant role gets its SCRAM verifier, derived from the stack's tenant key
(infra/schema/credentials.py), so PgBouncer can pass SCRAM through and give it
its own pool; the file holds verifiers only, never a password.
"""

from __future__ import annotations

from infra import render, roles, scram
from infra.config import PlatformConfig
from infra.schema import credentials


def pooler_users(cfg: PlatformConfig, app_password: str, admin_password: str,
                 tenant_key: str | None = None,
                 tenant_admin_password: str | None = None) -> dict[str, str]:
    users = render.pooler_users(cfg, app_password, admin_password)
    if tenant_admin_password:
        users[roles.TENANT_ADMIN] = scram.verifier(roles.TENANT_ADMIN, tenant_admin_password)
    if tenant_key:
        for t in cfg.tenants:
            users[credentials.role_for(t.slug)] = credentials.verifier(tenant_key, t.slug)
    return users
