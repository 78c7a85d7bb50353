"""The Platform component: picks the backend from config and exports the outputs."""

from __future__ import annotations

import importlib

import pulumi

from infra.config import PlatformConfig


class Platform(pulumi.ComponentResource):
    """One PostgreSQL platform: hosts from a backend, then the SQL in sql/."""

    def __init__(self, name: str, cfg: PlatformConfig,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pg-platform:index:Platform", name, None, opts)
        backend = importlib.import_module(f"infra.backends.{cfg.backend}")
        self.endpoints = backend.build(cfg, self)
        self.register_outputs({
            "primary_dsn": self.endpoints.primary_dsn,
            "app_dsn": self.endpoints.app_dsn,
        })


def export(platform: Platform) -> None:
    ep = platform.endpoints
    pulumi.export("primary_dsn", ep.primary_dsn)
    pulumi.export("app_dsn", ep.app_dsn)
    pulumi.export("replica_dsns", ep.replica_dsns)
    if ep.pooler_dsn is not None:
        pulumi.export("pooler_dsn", ep.pooler_dsn)
