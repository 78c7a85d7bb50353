"""`pg-platform:postgres`: the PostgreSQL server every backend runs.

The defaults are the dataclass's own; the parser reads them from it, so each
default is written once (docs/dev-and-prod.md's table is checked against it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from infra import pgparams
from infra.config.names import database_name, role_name
from infra.config.section import Section, memory_bytes
from infra.errors import ConfigError

# Every major version a stack file may name; each backend then refuses the ones
# it cannot run, naming those it can (infra/backends/base.py, `versions`).
VERSIONS = (13, 14, 15, 16, 17)
MAX_REPLICAS = 5
# pg-platform's own bounds, checked even where no server binary is installed to ask
# (a prod preview on a laptop): the server's own limits are far above what any host has.
MEMORY_BOUNDS = {"shared_buffers": ("128kB", "1TB"), "work_mem": ("64kB", "16GB"),
                 "maintenance_work_mem": ("1MB", "16GB"),
                 "effective_cache_size": ("8kB", "64TB")}
_PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
# Set by the renderers; overriding them through `parameters` would break the platform.
RESERVED_PARAMS = frozenset({
    "port", "listen_addresses", "unix_socket_directories", "hba_file", "data_directory",
    "password_encryption", "archive_command", "archive_mode", "wal_level",
    "max_slot_wal_keep_size",
})


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
    # Most WAL a replication slot may hold back; a slot past it is invalidated rather
    # than filling the disk (a removed or stalled replica's slot).
    max_slot_wal_keep_size: str = "64GB"


def _roles(sec: Section, d: PostgresSettings) -> tuple[str, str, str]:
    owner = role_name(sec.where("owner_role"), sec.ident("owner_role", d.owner_role))
    app = role_name(sec.where("app_role"), sec.ident("app_role", d.app_role))
    if app == owner:
        raise ConfigError(f"{sec.where('app_role')}={app!r}: the app role must differ from "
                          f"{sec.where('owner_role')}={owner!r}, so that the app owns nothing")
    replicator = role_name(sec.where("replication_role"),
                           sec.ident("replication_role", d.replication_role))
    if len({owner, app, replicator}) < 3:
        raise ConfigError(f"{sec.where('replication_role')}={replicator!r}: owner, app and "
                          "replication roles must be three different roles")
    if "postgres" in (owner, app, replicator):
        raise ConfigError(f"{sec.where('owner_role')}/{sec.where('app_role')}: 'postgres' is "
                          "reserved for the OS service user; choose another role name")
    return owner, app, replicator


def _parameters(sec: Section, version: int) -> tuple[tuple[str, str], ...]:
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
        if name in RESERVED_PARAMS:
            raise ConfigError(f"{where}: {name!r} is set by pg-platform and cannot be "
                              f"overridden; reserved: {', '.join(sorted(RESERVED_PARAMS))}")
        if isinstance(value, bool):
            value = "on" if value else "off"
        if not isinstance(value, (str, int, float)) or "\n" in str(value):
            raise ConfigError(f"{where}={value!r}: expected a single-line string or number")
        pgparams.check(name, str(value), where, version)
        params.append((name, str(value)))
    return tuple(params)


def parse_postgres(sec: Section) -> PostgresSettings:
    """Validate `pg-platform:postgres`."""
    d = PostgresSettings()
    version = sec.int("version", d.version, VERSIONS[0], VERSIONS[-1])
    port = sec.int("port", d.port, 1024, 65535)
    listen = sec.text("listen_address", d.listen_address)
    database = database_name(sec.where("database"), sec.ident("database", d.database))
    owner, app, replicator = _roles(sec, d)
    max_conn = sec.int("max_connections", d.max_connections, 10, 10000)
    reserved = sec.int("superuser_reserved_connections", d.superuser_reserved_connections, 1, 50)
    if reserved >= max_conn:
        raise ConfigError(f"{sec.where('superuser_reserved_connections')}={reserved} must be "
                          f"below {sec.where('max_connections')}={max_conn}")
    params = _parameters(sec, version)
    settings = PostgresSettings(
        version=version, port=port, listen_address=listen, database=database,
        owner_role=owner, app_role=app, replication_role=replicator, max_connections=max_conn,
        superuser_reserved_connections=reserved,
        shared_buffers=sec.memory("shared_buffers", d.shared_buffers),
        work_mem=sec.memory("work_mem", d.work_mem),
        maintenance_work_mem=sec.memory("maintenance_work_mem", d.maintenance_work_mem),
        effective_cache_size=sec.memory("effective_cache_size", d.effective_cache_size),
        parameters=params,
        max_slot_wal_keep_size=sec.memory("max_slot_wal_keep_size", d.max_slot_wal_keep_size),
    )
    for own, (lo, hi) in MEMORY_BOUNDS.items():
        value = getattr(settings, own)
        if not memory_bytes(lo) <= memory_bytes(value) <= memory_bytes(hi):
            raise ConfigError(f"{sec.where(own)}={value!r}: allowed range is {lo} to {hi}")
        pgparams.check_own_key(own, value, sec.where(own), version)
    pgparams.check_own_key("max_slot_wal_keep_size", settings.max_slot_wal_keep_size,
                           sec.where("max_slot_wal_keep_size"), version)
    sec.finish()
    return settings
