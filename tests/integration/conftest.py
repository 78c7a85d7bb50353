"""A whole local cluster for the replica, pooler and backup tests.

Built by calling the local backend's dynamic providers directly, with the very
inputs `pulumi up` gives them (infra.backends.local.*_props), on free loopback
ports in a scratch directory: a primary with WAL archiving, the platform
database and roles, a pgBackRest stanza with a full backup, two streaming
replicas and PgBouncer. Real processes throughout; one cluster per session
and TimescaleDB path: `timescaledb` (installed and preloaded on every node)
and `fallback` (installed, not preloaded), so every cluster test runs on both.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra import config, hostctl, render, roles
from infra.backends import local, tenant_users
from infra.backends.local_backup import BackupProvider
from infra.backends.local_layout import layout, replicas
from infra.backends.local_pooler import PoolerProvider
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backends.local_replica import ReplicaProvider
from tests import ports
from tests.ha_cluster import patroni_cluster
from tests.support import scratch_dir, write_tls
from tests.timescale import PATHS, ensure_installed

MAX_CONNECTIONS = 50  # well below the 500 clients the pooler test opens
POOL_SIZE = 10


def cluster_ports() -> tuple[int, int]:
    """A primary port whose +1 is free on the replicas' addresses, and a pooler port."""
    return ports.stack_port(), ports.free_port()


@dataclass
class Cluster:
    """The running cluster, its settings, passwords and the providers' state."""

    base: Path
    cfg: config.PlatformConfig
    settings: dict[str, Any]
    passwords: dict[str, str]
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: render.TlsFiles | None = None
    timescaledb: bool = False  # TimescaleDB preloaded on every node
    # The pooler's inputs for some settings: the hand-supervised path's, or the
    # Patroni path's (PgBouncer through HAProxy) with `pytest --ha-manager=patroni`.
    pooler_props: Callable[..., dict[str, Any]] = local.pooler_props

    def dsn(self, host: str, port: int, user: str, password: str, db: str) -> str:
        return hostctl.Server(Path("/"), port, host).dsn(user, password, db)

    def owner_dsn(self, db: str | None = None) -> str:
        pg = self.cfg.postgres
        return self.dsn(pg.listen_address, pg.port, pg.owner_role, self.passwords["owner"],
                        db or pg.database)

    def replica_dsn(self, index: int, *, owner: bool = True, monitor: bool = False) -> str:
        rep = replicas(self.cfg)[index - 1]
        pg = self.cfg.postgres
        user, pw = ((pg.owner_role, self.passwords["owner"]) if owner
                    else (pg.app_role, self.passwords["app"]))
        if monitor:
            user, pw = roles.MONITOR, self.passwords["monitor"]
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

    def monitor_dsn(self, db: str | None = None, host: str | None = None,
                    port: int | None = None) -> str:
        """The pg_monitor-only role: what exporters and health read statistics as."""
        pg = self.cfg.postgres
        return self.dsn(host or pg.listen_address, port or pg.port, roles.MONITOR,
                        self.passwords["monitor"], db or pg.database)

    def superuser_dsn(self, db: str | None = None) -> str:
        """Break-glass: the bootstrap superuser (the providers' own connection)."""
        pg = self.cfg.postgres
        return self.dsn(pg.listen_address, pg.port, roles.BREAK_GLASS,
                        self.passwords["superuser"], db or pg.database)

    def userlist(self, cfg: config.PlatformConfig | None = None) -> str:
        """The auth file as the local backend renders it (tenants come by auth_query)."""
        return tenant_users.auth_file(
            cfg or self.cfg, self.passwords["app"], self.passwords["admin"],
            self.passwords["tenant_admin"], self.passwords["pooler_auth"])


@pytest.fixture(scope="session", params=PATHS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    ensure_installed()
    ts = request.param == "timescaledb"
    if request.config.getoption("--ha-manager", default=None) == "patroni":
        with patroni_cluster(Cluster, ts, MAX_CONNECTIONS, POOL_SIZE) as managed:
            yield managed
        return
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
    pw = {k: secrets.token_urlsafe(24)
          for k in ("superuser", "owner", "app", "replication", "admin", "monitor",
                    "tenant_admin", "pooler_auth")}
    pw["tenant_key"] = secrets.token_urlsafe(32)
    c = Cluster(base=base, cfg=cfg, settings=settings, passwords=pw, timescaledb=ts)
    made: list[tuple[Any, dict[str, Any]]] = []
    # The stack's TLS files, as TlsFiles writes them: pg_hba admits hostssl only.
    tls = write_tls(Path(layout(cfg).tls.ca_file).parent)
    c.tls = tls
    try:
        for key, provider, props in [
            ("primary", PostgresServerProvider(),
             local.primary_props(cfg, pw["superuser"], tls, timescaledb=ts)),
            ("database", DatabaseProvider(),
             local.database_props(cfg, pw["superuser"], pw["app"], pw["replication"],
                                  owner_pw=pw["owner"], monitor_pw=pw["monitor"],
                                  tenant_admin_pw=pw["tenant_admin"],
                                  pooler_auth_pw=pw["pooler_auth"])),
            ("backup", BackupProvider(), local.backup_props(cfg)),
            *[(rep.name, ReplicaProvider(),
               local.replica_props(cfg, rep, pw["superuser"], pw["replication"], tls,
                                   timescaledb=ts))
              for rep in replicas(cfg)],
            ("pooler", PoolerProvider(), local.pooler_props(cfg, c.userlist(), tls)),
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
