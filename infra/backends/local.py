"""The local backend: PostgreSQL processes on this machine, driven by dynamic providers."""

from __future__ import annotations

from pathlib import Path

import pulumi
from infra import render
from infra.backends import Endpoints
from infra.backends.local_postgres import PlatformDatabase, PostgresServer
from infra.config import PlatformConfig
from infra.passwords import Password

ROOT = Path(__file__).resolve().parents[2]


def timescaledb_installed(version: int) -> bool:
    """Debian has no TimescaleDB package; a hand-installed one is used when present."""
    return Path(f"/usr/lib/postgresql/{version}/lib/timescaledb.so").exists()


def state_dir(cfg: PlatformConfig) -> Path:
    base = Path(cfg.state_dir) if cfg.state_dir else ROOT / ".state" / cfg.stack
    return base if base.is_absolute() else (ROOT / base)


def _dsn(host: str, port: int, user: str, password: pulumi.Input[str],
         database: str) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.format(
        "postgresql://{0}:{1}@{2}:{3}/{4}", user, password, host, port, database))


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """The primary, its database and roles; returns how to reach them."""
    pg = cfg.postgres
    base = state_dir(cfg)
    child = pulumi.ResourceOptions(parent=parent)
    owner_pw = Password(f"{pg.owner_role}-password", opts=child)
    app_pw = Password(f"{pg.app_role}-password", opts=child)
    paths = render.HostPaths(data_dir=str(base / "primary"), socket_dir=str(base / "run"))
    server = PostgresServer("primary", {
        "data_dir": paths.data_dir,
        "socket_dir": paths.socket_dir,
        "host": pg.listen_address,
        "port": pg.port,
        "superuser": pg.owner_role,
        "superuser_password": owner_pw.value,
        "postgresql_conf": render.postgresql_conf(
            cfg, paths, timescaledb=timescaledb_installed(pg.version)),
        "pg_hba_conf": render.pg_hba_conf(cfg),
    }, child)
    database = PlatformDatabase("database", {
        "host": pg.listen_address,
        "port": pg.port,
        "data_dir": paths.data_dir,
        "superuser": pg.owner_role,
        "superuser_password": owner_pw.value,
        "database": pg.database,
        "app_role": pg.app_role,
        "app_password": app_pw.value,
    }, pulumi.ResourceOptions(parent=parent, depends_on=[server]))
    return Endpoints(
        primary_dsn=_dsn(pg.listen_address, pg.port, pg.owner_role, owner_pw.value, pg.database),
        app_dsn=_dsn(pg.listen_address, pg.port, pg.app_role, app_pw.value, pg.database),
        replica_dsns=pulumi.Output.secret([]),
        ready=[database],
    )
