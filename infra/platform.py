"""The Platform component: hosts from the configured backend, then the SQL in sql/."""

from __future__ import annotations

import importlib
from pathlib import Path

import pulumi

from infra.config import PlatformConfig
from infra.schema.resource import SchemaMigrations


def sql_dir() -> Path:
    """The program's own sql/: Pulumi runs a program from its project folder."""
    return Path.cwd() / "sql"


class Platform(pulumi.ComponentResource):
    """One PostgreSQL platform; `endpoints` and `schema` hold what it exports."""

    def __init__(self, name: str, cfg: PlatformConfig,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pg-platform:index:Platform", name, None, opts)
        backend = importlib.import_module(f"infra.backends.{cfg.backend}")
        self.endpoints = backend.build(cfg, self)
        # The engine always uses the direct owner DSN, never the pooler's.
        self.schema = SchemaMigrations(
            "schema", dsn=self.endpoints.primary_dsn, sql_dir=str(sql_dir()),
            tenants=cfg.tenants, app_role=cfg.postgres.app_role,
            target_id=self.endpoints.primary_id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.endpoints.ready))
        self.register_outputs({
            "primary_dsn": self.endpoints.primary_dsn,
            "app_dsn": self.endpoints.app_dsn,
            "applied_migrations": self.schema.applied_migrations,
        })


def export(platform: Platform) -> None:
    """The stack outputs every backend shares (names in ARCHITECTURE.md)."""
    ep = platform.endpoints
    pulumi.export("primary_dsn", ep.primary_dsn)
    pulumi.export("app_dsn", ep.app_dsn)
    pulumi.export("replica_dsns", ep.replica_dsns)
    if ep.pooler_dsn is not None:
        pulumi.export("pooler_dsn", ep.pooler_dsn)
    if ep.pooler_admin_dsn is not None:
        pulumi.export("pooler_admin_dsn", ep.pooler_admin_dsn)
    if ep.ca_cert is not None:
        pulumi.export("ca_cert", ep.ca_cert)
    if ep.testinfra_hosts is not None:
        pulumi.export("testinfra_hosts", ep.testinfra_hosts)
    pulumi.export("applied_migrations", platform.schema.applied_migrations)
