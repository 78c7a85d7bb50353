"""Typed, validated stack settings.

Stack files are parsed once, here, into frozen dataclasses. Every bad value is
rejected before any resource exists, with a message that names the config key,
the value and what is allowed. Backends and renderers receive these objects,
never raw dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra.errors import ConfigError

if TYPE_CHECKING:
    from infra.config_cloud import AwsSettings, DockerSettings
    from infra.config_monitoring import MonitoringSettings

PROJECT = "pg-platform"
BACKENDS = ("local", "docker", "aws")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MEMORY = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)$")
_PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
# Set by the renderers; overriding them through `parameters` would break the platform.
_RESERVED_PARAMS = frozenset({
    "port", "listen_addresses", "unix_socket_directories", "hba_file", "data_directory",
    "password_encryption", "archive_command", "archive_mode", "wal_level",
})


def _key(path: str) -> str:
    return f"{PROJECT}:{path}"


class Section:
    """Reads one mapping from a stack file and records which keys were used."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{_key(path)}: expected a mapping, got {type(raw).__name__} {raw!r}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self.used: set[str] = set()

    def where(self, name: str) -> str:
        return _key(f"{self.path}.{name}" if self.path else name)

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a whole number "
                              f"from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ConfigError(f"{self.where(name)}={value}: allowed range is {lo} to {hi}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise ConfigError(f"{self.where(name)}={value!r}: allowed values are "
                              f"{', '.join(allowed)}")
        return str(value)

    def ident(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not _IDENT.match(value):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a lowercase SQL "
                              "identifier (a-z, 0-9, _; starting with a letter or _; "
                              "at most 63 characters)")
        return value

    def memory(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not _MEMORY.match(value):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a size such as "
                              "'128MB' (a whole number followed by kB, MB, GB or TB)")
        return value

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.where(name)}={value!r}: expected a non-empty string")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(name)}={value!r}: expected true or false")
        return value

    def section(self, name: str) -> Section:
        return Section(self.get(name, None), f"{self.path}.{name}" if self.path else name)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ConfigError(f"{self.where(unknown[0])}: unknown setting; allowed settings "
                              f"here are {', '.join(sorted(self.used))}")


def memory_bytes(size: str) -> int:
    """Bytes in a PostgreSQL memory size such as '128MB'."""
    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    m = _MEMORY.match(size)
    if not m:
        raise ConfigError(f"{size!r} is not a memory size such as '128MB'")
    return int(size[: -len(m.group(1))]) * units[m.group(1)]


@dataclass(frozen=True)
class PostgresSettings:
    version: int = 15
    port: int = 5432
    listen_address: str = "127.0.0.1"
    database: str = "platform"
    owner_role: str = "platform_owner"
    app_role: str = "app"
    replication_role: str = "replicator"
    max_connections: int = 100
    superuser_reserved_connections: int = 3
    shared_buffers: str = "128MB"
    work_mem: str = "4MB"
    maintenance_work_mem: str = "64MB"
    effective_cache_size: str = "512MB"
    parameters: tuple[tuple[str, str], ...] = ()


# PgBouncer keeps this many of the primary's connections free for direct use
# (migrations, pgBackRest, monitoring) when sizing pools against max_connections.
DIRECT_CONNECTION_HEADROOM = 5
MAX_REPLICAS = 5


@dataclass(frozen=True)
class PoolerSettings:
    """PgBouncer in front of the cluster; defaults are PgBouncer's except where noted."""

    port: int = 6432
    pool_mode: str = "transaction"
    default_pool_size: int = 20
    min_pool_size: int = 0
    reserve_pool_size: int = 0
    reserve_pool_timeout: int = 5
    max_client_conn: int = 1100  # 1,000 app clients plus console, exporter, health
    max_db_connections: int = 0
    server_idle_timeout: int = 600
    server_lifetime: int = 3600
    server_connect_timeout: int = 15
    query_wait_timeout: int = 120
    client_idle_timeout: int = 0
    idle_transaction_timeout: int = 0
    admin_user: str = "pgbouncer_admin"
    log_connections: bool = False

    @property
    def server_connections_per_pool(self) -> int:
        """The most server connections one pool may open, reserve included."""
        most = self.default_pool_size + self.reserve_pool_size
        return min(most, self.max_db_connections) if self.max_db_connections else most


@dataclass(frozen=True)
class S3Repo:
    """An S3 repository; `bucket` may be left to the backend that creates it."""

    region: str
    endpoint: str
    bucket: str = ""
    path: str = "/pgbackrest"
    uri_style: str = "host"


@dataclass(frozen=True)
class BackupSchedule:
    """Cron expressions (minute hour day-of-month month day-of-week); "" disables one."""

    full: str = "0 1 * * 0"
    diff: str = "0 1 * * 1-6"
    incr: str = "0 */4 * * *"


@dataclass(frozen=True)
class BackupSettings:
    stanza: str = "main"
    repo: str = "posix"
    retention_full: int = 2
    retention_full_type: str = "count"
    retention_diff: int = 6
    compress_type: str = "lz4"
    process_max: int = 2  # bench/results.md P6: one process is 0.65x pg_basebackup
    schedule: BackupSchedule = field(default_factory=BackupSchedule)
    s3: S3Repo | None = None


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str
    plan: str


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
    monitoring: MonitoringSettings = field(default_factory=lambda: _monitoring_defaults())

    @property
    def max_wal_senders(self) -> int:
        """Room for the most replicas allowed plus backups and a spare, whatever the count.

        Fixed rather than tied to `replicas`: it needs a restart of the primary and
        every standby must match it, so adding or removing a replica would otherwise
        restart the whole cluster.
        """
        return MAX_REPLICAS + 5


def _postgres(sec: Section) -> PostgresSettings:
    version = sec.int("version", 15, 13, 17)
    port = sec.int("port", 5432, 1024, 65535)
    listen = sec.text("listen_address", "127.0.0.1")
    database = sec.ident("database", "platform")
    owner = sec.ident("owner_role", "platform_owner")
    app = sec.ident("app_role", "app")
    if app == owner:
        raise ConfigError(f"{sec.where('app_role')}={app!r}: the app role must differ from "
                          f"{sec.where('owner_role')}={owner!r}, so that the app owns nothing")
    replicator = sec.ident("replication_role", "replicator")
    if len({owner, app, replicator}) < 3:
        raise ConfigError(f"{sec.where('replication_role')}={replicator!r}: owner, app and "
                          "replication roles must be three different roles")
    if "postgres" in (owner, app, replicator):
        raise ConfigError(f"{sec.where('owner_role')}/{sec.where('app_role')}: 'postgres' is "
                          "reserved for the OS service user; choose another role name")
    max_conn = sec.int("max_connections", 100, 10, 10000)
    reserved = sec.int("superuser_reserved_connections", 3, 1, 50)
    if reserved >= max_conn:
        raise ConfigError(f"{sec.where('superuser_reserved_connections')}={reserved} must be "
                          f"below {sec.where('max_connections')}={max_conn}")
    params_raw = sec.get("parameters", {}) or {}
    if not isinstance(params_raw, Mapping):
        raise ConfigError(f"{sec.where('parameters')}={params_raw!r}: expected a mapping of "
                          "PostgreSQL setting names to values")
    params: list[tuple[str, str]] = []
    for name, value in sorted(params_raw.items()):
        where = sec.where(f"parameters.{name}")
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise ConfigError(f"{where}: {name!r} is not a PostgreSQL setting name "
                              "(lowercase letters, digits, _ and .)")
        if name in _RESERVED_PARAMS:
            raise ConfigError(f"{where}: {name!r} is set by pg-platform and cannot be "
                              f"overridden; reserved: {', '.join(sorted(_RESERVED_PARAMS))}")
        if isinstance(value, bool):
            value = "on" if value else "off"
        if not isinstance(value, (str, int, float)) or "\n" in str(value):
            raise ConfigError(f"{where}={value!r}: expected a single-line string or number")
        params.append((name, str(value)))
    settings = PostgresSettings(
        version=version, port=port, listen_address=listen, database=database,
        owner_role=owner, app_role=app, replication_role=replicator, max_connections=max_conn,
        superuser_reserved_connections=reserved,
        shared_buffers=sec.memory("shared_buffers", "128MB"),
        work_mem=sec.memory("work_mem", "4MB"),
        maintenance_work_mem=sec.memory("maintenance_work_mem", "64MB"),
        effective_cache_size=sec.memory("effective_cache_size", "512MB"),
        parameters=tuple(params),
    )
    sec.finish()
    return settings


def _tenants(raw: Any) -> tuple[Tenant, ...]:
    if raw is None:
        return ()
    from infra.schema.tenants import validate_slug

    if not isinstance(raw, list):
        raise ConfigError(f"{_key('tenants')}={raw!r}: expected a list of "
                          "{slug, name, plan} mappings")
    seen: set[str] = set()
    out: list[Tenant] = []
    for i, item in enumerate(raw):
        sec = Section(item, f"tenants[{i}]")
        try:
            slug = validate_slug(sec.get("slug", None))
        except ConfigError as exc:
            raise ConfigError(f"{sec.where('slug')}: {exc}") from None
        if slug in seen:
            raise ConfigError(f"{sec.where('slug')}={slug!r}: duplicate tenant slug")
        seen.add(slug)
        out.append(Tenant(slug=slug, name=sec.text("name", slug),
                          plan=sec.choice("plan", "standard",
                                          ("free", "standard", "premium", "enterprise"))))
        sec.finish()
    return tuple(out)


def load(raw: Mapping[str, Any], stack: str) -> PlatformConfig:
    """Build settings from a stack's config, keyed without the project prefix."""
    top = Section(raw, "")
    default_backend = {"dev": "docker", "prod": "aws"}.get(stack, "local")
    backend = top.choice("backend", default_backend, BACKENDS)
    postgres = _postgres(top.section("postgres"))
    replicas = top.int("replicas", 0, 0, MAX_REPLICAS)
    state_dir = top.get("state_dir", "")
    if not isinstance(state_dir, str):
        raise ConfigError(f"{_key('state_dir')}={state_dir!r}: expected a path string")
    tenants = _tenants(top.get("tenants", None))
    from infra import config_cloud

    docker = config_cloud.parse_docker(top.section("docker"), backend)
    aws = config_cloud.parse_aws(top.section("aws"), backend)
    from infra import config_services

    pooler = config_services.parse_pooler(top.section("pooler"), postgres)
    backup = config_services.parse_backup(top.section("backup"), backend,
                                          aws.region if aws else None)
    from infra.config_monitoring import parse_monitoring

    monitoring = parse_monitoring(top.section("monitoring"))
    top.finish()
    return PlatformConfig(stack=stack, backend=backend, postgres=postgres,
                          replicas=replicas, state_dir=state_dir, tenants=tenants,
                          docker=docker, aws=aws, pooler=pooler, backup=backup,
                          monitoring=monitoring)


def _monitoring_defaults() -> MonitoringSettings:
    from infra.config_monitoring import MonitoringSettings

    return MonitoringSettings()


def from_pulumi() -> PlatformConfig:
    """Read every `pg-platform:` key of the current stack, so unknown keys are caught too."""
    import json

    import pulumi
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for key, value in values.items():
        project, _, name = key.partition(":")
        if project != PROJECT:
            continue
        try:
            raw[name] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            raw[name] = value
    return load(raw, pulumi.get_stack())
