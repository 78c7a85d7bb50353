"""A whole local cluster for the replica, pooler and backup tests.

Built by calling the local backend's dynamic providers directly, with the very
inputs `pulumi up` gives them (infra.backends.local.*_props), on free loopback
ports in a scratch directory: a primary with WAL archiving, the platform
database and roles, a pgBackRest stanza with a full backup, two streaming
replicas and PgBouncer. Real processes throughout; one cluster per session.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra import config, hostctl, render
from infra.backends import local
from infra.backends.local_backup import BackupProvider
from infra.backends.local_layout import layout, replicas
from infra.backends.local_pooler import PoolerProvider
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backends.local_replica import ReplicaProvider
from tests.support import scratch_dir

MAX_CONNECTIONS = 50  # well below the 500 clients the pooler test opens
POOL_SIZE = 10


def cluster_ports() -> tuple[int, int]:
    """A primary port whose +1 is free on the replicas' addresses, and a pooler port."""
    for _ in range(50):
        port = hostctl.free_port()
        if port < 65535 and all(hostctl.port_free(f"127.0.0.{h}", port + 1) for h in (2, 3, 4)):
            return port, hostctl.free_port()
    raise RuntimeError("no free port pair for the test cluster")


@dataclass
class Cluster:
    """The running cluster, its settings, passwords and the providers' state."""

    base: Path
    cfg: config.PlatformConfig
    settings: dict[str, Any]
    passwords: dict[str, str]
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def dsn(self, host: str, port: int, user: str, password: str, db: str) -> str:
        return hostctl.Server(Path("/"), port, host).dsn(user, password, db)

    def owner_dsn(self, db: str | None = None) -> str:
        pg = self.cfg.postgres
        return self.dsn(pg.listen_address, pg.port, pg.owner_role, self.passwords["owner"],
                        db or pg.database)

    def replica_dsn(self, index: int, *, owner: bool = True) -> str:
        rep = replicas(self.cfg)[index - 1]
        pg = self.cfg.postgres
        user, pw = ((pg.owner_role, self.passwords["owner"]) if owner
                    else (pg.app_role, self.passwords["app"]))
        return self.dsn(rep.host, rep.port, user, pw, pg.database)

    def pooler_dsn(self, db: str | None = None) -> str:
        pg = self.cfg.postgres
        return self.dsn(pg.listen_address, self.cfg.pooler.port, pg.app_role,
                        self.passwords["app"], db or pg.database)

    def admin_dsn(self) -> str:
        return self.dsn(self.cfg.postgres.listen_address, self.cfg.pooler.port,
                        self.cfg.pooler.admin_user, self.passwords["admin"], "pgbouncer")

    def with_settings(self, **changes: Any) -> config.PlatformConfig:
        return config.load({**self.settings, **changes}, "test")

    def userlist(self, cfg: config.PlatformConfig | None = None) -> str:
        return render.userlist_txt(render.pooler_users(
            cfg or self.cfg, self.passwords["app"], self.passwords["admin"]))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    base = scratch_dir("pgp-cluster-")
    port, pooler_port = cluster_ports()
    settings: dict[str, Any] = {
        "state_dir": str(base), "replicas": 2,
        "postgres": {"port": port, "max_connections": MAX_CONNECTIONS},
        "pooler": {"port": pooler_port, "default_pool_size": POOL_SIZE,
                   "max_client_conn": 1000},
        "backup": {"retention_full": 2},
    }
    cfg = config.load(settings, "test")
    pw = {k: secrets.token_urlsafe(24) for k in ("owner", "app", "replication", "admin")}
    c = Cluster(base=base, cfg=cfg, settings=settings, passwords=pw)
    made: list[tuple[Any, dict[str, Any]]] = []
    try:
        for key, provider, props in [
            ("primary", PostgresServerProvider(), local.primary_props(cfg, pw["owner"])),
            ("database", DatabaseProvider(),
             local.database_props(cfg, pw["owner"], pw["app"], pw["replication"])),
            ("backup", BackupProvider(), local.backup_props(cfg, pw["owner"])),
            *[(rep.name, ReplicaProvider(),
               local.replica_props(cfg, rep, pw["owner"], pw["replication"]))
              for rep in replicas(cfg)],
            ("pooler", PoolerProvider(), local.pooler_props(cfg, c.userlist())),
        ]:
            result = provider.create(props)
            c.outs[key] = dict(result.outs or {})
            made.append((provider, c.outs[key]))
        yield c
    finally:
        for provider, outs in reversed(made):
            with contextlib.suppress(Exception):  # keep tearing down the rest
                provider.delete("", outs)
        hostctl.Server(Path(layout(cfg).primary_paths().data_dir), port).remove()
        shutil.rmtree(base, ignore_errors=True)
