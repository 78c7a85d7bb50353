"""The local stack's generated passwords, the same on both managers' paths.

The resource names are the stack's state: a Patroni stack and a hand-supervised
one hold the same roles under the same names, so both paths take them from here.
"""

from __future__ import annotations

from typing import NamedTuple

import pulumi

from infra import roles
from infra.config import PlatformConfig
from infra.passwords import Password


class LocalPasswords(NamedTuple):
    superuser: pulumi.Output[str]  # break-glass: never rotated by `rotation`
    owner: pulumi.Output[str]
    app: pulumi.Output[str]
    replication: pulumi.Output[str]
    monitor: pulumi.Output[str]
    tenant_admin: pulumi.Output[str]
    pooler_auth: pulumi.Output[str]
    pooler_admin: pulumi.Output[str]
    tenant_key: pulumi.Output[str]  # tenants' passwords derive from it


def local_passwords(cfg: PlatformConfig, opts: pulumi.ResourceOptions) -> LocalPasswords:
    """`pg-platform:rotation` gives every role but break-glass a new password."""
    pg, rot = cfg.postgres, cfg.rotation

    def rotated(role: str) -> pulumi.Output[str]:
        return Password(f"{role}-password", rotation=rot, opts=opts).value

    return LocalPasswords(
        superuser=Password(f"{roles.BREAK_GLASS}-password", opts=opts).value,
        owner=rotated(pg.owner_role), app=rotated(pg.app_role),
        replication=rotated(pg.replication_role), monitor=rotated(roles.MONITOR),
        tenant_admin=rotated(roles.TENANT_ADMIN), pooler_auth=rotated(roles.POOLER_AUTH),
        pooler_admin=rotated(cfg.pooler.admin_user),
        tenant_key=Password("tenant-password-key", opts=opts).value)
