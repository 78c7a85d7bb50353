"""The whole stack's settings, and the loader that builds them.

Stack files are parsed once, here, into frozen dataclasses. Every bad value is
rejected before any resource exists, with a message that names the config key,
the value and what is allowed. Backends and renderers receive these objects,
never raw dicts. Each section's model, defaults and checks live in its own
module beside this one; this module only puts them together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from infra.config.aws import AwsSettings, parse_aws
from infra.config.backup import BackupSettings, parse_backup
from infra.config.docker import DockerSettings, parse_docker
from infra.config.ha import HaSettings, parse_ha
from infra.config.monitoring import MonitoringSettings, parse_monitoring
from infra.config.names import check_plain_text
from infra.config.paths import check_state_dir
from infra.config.pooler import PoolerSettings, parse_pooler
from infra.config.ports import check_collisions, ha_ports, service_ports
from infra.config.postgres import MAX_REPLICAS, PostgresSettings, parse_postgres
from infra.config.section import PROJECT, Section
from infra.config.tenants import Tenant, parse_tenants
from infra.config.timescaledb import TimescaleSettings, parse_timescaledb
from infra.errors import ConfigError

BACKENDS = ("local", "docker", "aws")
# The backend a stack uses when its file names none.
DEFAULT_BACKENDS = {"dev": "docker", "prod": "aws"}
# Where exporters listen when the ports are left at 0. On hosts of their own
# (docker, aws) the exporters' registered defaults; on the local stack, offsets
# from postgres.port (as the pooler's default is), so that several local stacks,
# and the tests' throw-away ones, never reach for the same port.
HOST_PORTS = (9187, 9127)
LOCAL_OFFSETS = (2000, 3000)


@dataclass(frozen=True)
class PlatformConfig:
    stack: str
    backend: str
    postgres: PostgresSettings
    replicas: int = 0
    state_dir: str = ""
    tenants: tuple[Tenant, ...] = field(default_factory=tuple)
    docker: DockerSettings | None = None
    aws: AwsSettings | None = None
    pooler: PoolerSettings = field(default_factory=PoolerSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    # Most tenants the registry may hold; public.create_tenant refuses more (issue #12).
    tenant_quota: int = 1000
    # A change that would delete data (a new primary cluster, a dropped
    # database) is refused in preview unless this is true.
    allow_data_loss: bool = False
    timescaledb: TimescaleSettings = field(default_factory=TimescaleSettings)
    # Bumping it gives every generated role password a new value, which reaches the
    # database (ALTER ROLE with a SCRAM verifier), PgBouncer's auth file, the
    # passfiles and the secret store in place (docs/day2.md).
    rotation: int = 0
    ha: HaSettings = field(default_factory=HaSettings)

    @property
    def max_wal_senders(self) -> int:
        """Room for the most replicas allowed plus backups and a spare, whatever the count.

        Fixed rather than tied to `replicas`: it needs a restart of the primary and
        every standby must match it, so adding or removing a replica would otherwise
        restart the whole cluster.
        """
        return MAX_REPLICAS + 5


def load(raw: Mapping[str, Any], stack: str) -> PlatformConfig:
    """Build settings from a stack's config, keyed without the project prefix."""
    check_plain_text(raw)
    top = Section(raw, "")
    d: dict[str, Any] = {f.name: f.default for f in fields(PlatformConfig)}
    backend = top.choice("backend", DEFAULT_BACKENDS.get(stack, "local"), BACKENDS)
    postgres = parse_postgres(top.section("postgres"))
    replicas = top.int("replicas", d["replicas"], 0, MAX_REPLICAS)
    state_dir = check_state_dir(top.get("state_dir", d["state_dir"]), stack)
    tenants = parse_tenants(top.get("tenants", None))
    tenant_quota = top.int("tenant_quota", max(d["tenant_quota"], len(tenants)), len(tenants),
                           1_000_000)
    allow_data_loss = top.flag("allow_data_loss", d["allow_data_loss"])
    docker = parse_docker(top.section("docker"), backend)
    aws = parse_aws(top.section("aws"), backend)
    pooler = parse_pooler(top.section("pooler"), postgres)
    backup = parse_backup(top.section("backup"), backend, aws.region if aws else None)
    monitoring = parse_monitoring(top.section("monitoring"))
    timescaledb = parse_timescaledb(top.section("timescaledb"))
    rotation = top.int("rotation", d["rotation"], 0, 1_000_000)
    ha = parse_ha(top.section("ha"))
    top.finish()
    cfg = PlatformConfig(stack=stack, backend=backend, postgres=postgres,
                         replicas=replicas, state_dir=state_dir, tenants=tenants,
                         docker=docker, aws=aws, pooler=pooler, backup=backup,
                         monitoring=monitoring, tenant_quota=tenant_quota,
                         allow_data_loss=allow_data_loss, timescaledb=timescaledb,
                         rotation=rotation, ha=ha)
    check_collisions(service_ports(cfg.backend, cfg.replicas, postgres, pooler, monitoring,
                                   exporter_ports(cfg)))
    for group in ha_ports(cfg.backend, ha, postgres, pooler):
        check_collisions(group)
    return cfg


def decode(values: Mapping[str, Any]) -> dict[str, Any]:
    """`pg-platform:` keys of a stack's config, JSON-decoded, keyed without the prefix."""
    raw: dict[str, Any] = {}
    for name, value in values.items():
        project, _, short = str(name).partition(":")
        if project != PROJECT:
            continue
        try:
            raw[short] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            raw[short] = value
    return raw


def from_pulumi() -> PlatformConfig:
    """Read every `pg-platform:` key of the current stack, so unknown keys are caught too."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return load(decode(values), pulumi.get_stack())


def exporter_ports(cfg: PlatformConfig) -> tuple[int, int]:
    """(postgres exporter, pgbouncer exporter) ports; local replica i uses the first + i."""
    mon = cfg.monitoring
    local = cfg.backend == "local"
    pg_exp = mon.postgres_exporter_port or (
        cfg.postgres.port + LOCAL_OFFSETS[0] if local else HOST_PORTS[0])
    bouncer_exp = mon.pgbouncer_exporter_port or (
        cfg.postgres.port + LOCAL_OFFSETS[1] if local else HOST_PORTS[1])
    top = pg_exp + (MAX_REPLICAS if local else 0)
    if top > 65535 or bouncer_exp > 65535:
        raise ConfigError(
            f"pg-platform:postgres.port={cfg.postgres.port}: the exporters' default ports "
            f"({pg_exp}..{top} and {bouncer_exp}) pass 65535; set "
            "pg-platform:monitoring.postgres_exporter_port and pgbouncer_exporter_port")
    return pg_exp, bouncer_exp
