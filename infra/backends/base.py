"""The backend contract: what every backend takes, what it must return, what it can run.

A backend turns validated settings into running hosts and returns `Endpoints`,
so the SQL engine, the stack outputs and the ops commands do not care which
one ran. Backends register in infra/backends/registry.py; nothing else picks
one by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulumi

from infra.config import PlatformConfig
from infra.errors import ConfigError
from infra.hostctl.pgbackrest import PgBackRest

# The stack outputs every backend exports, in this order (README, Outputs).
# `applied_migrations` is the SQL engine's, added by infra/platform.py.
OUTPUTS = ("primary_dsn", "app_dsn", "replica_dsns", "pooler_dsn", "pooler_admin_dsn",
           "ca_cert", "testinfra_hosts")


def slot_name(i: int) -> str:
    """Replica i's physical replication slot, also its application_name on the primary."""
    return f"replica_{i}"


@dataclass
class Endpoints:
    """Where the platform answers; every DSN is a secret Output. Every field is required,
    so every backend exports the same outputs (OUTPUTS)."""

    primary_dsn: pulumi.Output[str]
    app_dsn: pulumi.Output[str]
    replica_dsns: pulumi.Output[list[str]]
    pooler_dsn: pulumi.Output[str]
    # PgBouncer's admin console (SHOW POOLS, RELOAD…) as its admin user.
    pooler_admin_dsn: pulumi.Output[str]
    # The CA (PEM) that signed the servers' certificates, for clients' sslrootcert;
    # "" where the backend does not issue certificates yet.
    ca_cert: pulumi.Output[str]
    # The hosts for the testinfra suite (docs/testing.md, tests/infra/inventory.py):
    # where they are, their paths, and the SHA-256 of each non-secret rendered file.
    testinfra_hosts: pulumi.Output[list[dict[str, Any]]]
    # Identity of the primary's data: when it changes, the SQL is applied again.
    primary_id: pulumi.Output[str]
    # Resources the SQL engine must wait for (the database and its roles).
    ready: list[pulumi.Resource] = field(default_factory=list)
    # Security (issue #12), local backend so far: the break-glass superuser, the
    # pg_monitor-only role, tenant_admin (through the pooler) and the key tenant
    # passwords derive from. Exported when set (infra/platform.py SECURITY_OUTPUTS).
    superuser_dsn: pulumi.Output[str] | None = None
    monitor_dsn: pulumi.Output[str] | None = None
    tenant_admin_dsn: pulumi.Output[str] | None = None
    tenant_key: pulumi.Output[str] | None = None

    def outputs(self) -> dict[str, pulumi.Output[Any]]:
        return {name: getattr(self, name) for name in OUTPUTS}


@dataclass(frozen=True)
class LocalFiles:
    """Files of a stack that are on this machine, for the ops commands (backup, health)."""

    pgbackrest_config: Path
    restores_dir: Path
    # ha.manager patroni: each node's patroni.yml (0600) and HAProxy's stats socket.
    patroni_configs: tuple[Path, ...] = ()
    haproxy_socket: Path | None = None


class Backend(Protocol):
    """One way of making hosts; see local.py, docker.py and aws.py."""

    name: str

    def versions(self, cfg: PlatformConfig) -> tuple[int, ...]:
        """The PostgreSQL major versions this backend can run with these settings."""
        ...

    def build(self, cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
        """Declare the hosts as children of `parent`."""
        ...

    def local_files(self, cfg: PlatformConfig) -> LocalFiles | None:
        """Where this machine holds the stack's pgBackRest files; None when on other hosts."""
        ...

    def remote_pgbackrest(self, cfg: PlatformConfig) -> PgBackRest | None:
        """pgBackRest where `local_files` has none but this machine can still run it
        elsewhere (dev: in the primary container, through `docker exec`), for read-only
        questions such as health's backup ages; None where it cannot (prod)."""
        ...


def check_version(backend: Backend, cfg: PlatformConfig) -> None:
    """Refuse a `postgres.version` the backend cannot run, naming those it can."""
    can = backend.versions(cfg)
    if cfg.postgres.version not in can:
        allowed = ", ".join(map(str, can)) or "none"
        raise ConfigError(f"pg-platform:postgres.version={cfg.postgres.version}: the "
                          f"{backend.name} backend can run {allowed}")
