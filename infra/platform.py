"""The Platform component: hosts from the configured backend, then the SQL in sql/."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.backends import registry
from infra.config import PlatformConfig
from infra.schema.resource import SchemaMigrations
from infra.timescaledb.resource import TimescalePolicies


def sql_dir() -> Path:
    """The program's own sql/: Pulumi runs a program from its project folder."""
    return Path.cwd() / "sql"


class Platform(pulumi.ComponentResource):
    """One PostgreSQL platform; `endpoints` and `schema` hold what it exports."""

    def __init__(self, name: str, cfg: PlatformConfig,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        backend = registry.for_stack(cfg)  # refuses what it cannot run before anything exists
        super().__init__("pg-platform:index:Platform", name, None, opts)
        self.endpoints = backend.build(cfg, self)
        # The engine always uses the direct owner DSN, never the pooler's.
        self.schema = SchemaMigrations(
            "schema", dsn=self.endpoints.primary_dsn, sql_dir=str(sql_dir()),
            tenants=cfg.tenants, app_role=cfg.postgres.app_role,
            target_id=self.endpoints.primary_id, tenant_key=self.endpoints.tenant_key,
            tenant_quota=cfg.tenant_quota,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.endpoints.ready))
        # The TimescaleDB policies from pg-platform:timescaledb, after the SQL defines them.
        TimescalePolicies("timescaledb-policies", dsn=self.endpoints.primary_dsn,
                          settings=cfg.timescaledb.policy_inputs(),
                          target_id=self.endpoints.primary_id,
                          opts=pulumi.ResourceOptions(parent=self, depends_on=[self.schema]))
        self.register_outputs({
            "primary_dsn": self.endpoints.primary_dsn,
            "app_dsn": self.endpoints.app_dsn,
            "applied_migrations": self.schema.applied_migrations,
        })


def export(platform: Platform) -> None:
    """The stack outputs every backend shares (infra/backends/base.py OUTPUTS)."""
    for name, value in platform.endpoints.outputs().items():
        pulumi.export(name, value)
    for extra in ("superuser_dsn", "monitor_dsn", "tenant_admin_dsn", "tenant_key"):
        found = getattr(platform.endpoints, extra, None)
        if found is not None:  # issue #12; the local backend so far
            pulumi.export(extra, found)
    pulumi.export("applied_migrations", platform.schema.applied_migrations)
