"""Typed, validated stack settings: one module per section, put together in `platform`.

The names below are the package's public face (`from infra.config import X`);
the leaves never import this module, only each other's leaves.
"""

from infra.config.aws import AwsSettings, parse_aws
from infra.config.backup import BackupSchedule, BackupSettings, S3Repo, parse_backup
from infra.config.docker import DEFAULT_IMAGE, DockerSettings, parse_docker
from infra.config.ha import HaSettings, parse_ha
from infra.config.monitoring import (
    MonitoringSettings,
    full_backup_max_age_seconds,
    parse_monitoring,
    schedule_period_hours,
)
from infra.config.platform import (
    BACKENDS,
    HOST_PORTS,
    LOCAL_OFFSETS,
    PlatformConfig,
    decode,
    exporter_ports,
    from_pulumi,
    load,
)
from infra.config.pooler import DIRECT_CONNECTION_HEADROOM, PoolerSettings, parse_pooler
from infra.config.postgres import MAX_REPLICAS, VERSIONS, PostgresSettings, parse_postgres
from infra.config.section import PROJECT, Section, memory_bytes
from infra.config.tenants import Tenant, parse_tenants
from infra.config.timescaledb import TimescaleSettings, parse_timescaledb

__all__ = [
    "BACKENDS", "DEFAULT_IMAGE", "DIRECT_CONNECTION_HEADROOM", "HOST_PORTS", "LOCAL_OFFSETS",
    "MAX_REPLICAS", "PROJECT", "VERSIONS", "AwsSettings", "BackupSchedule", "BackupSettings",
    "DockerSettings", "HaSettings", "MonitoringSettings", "PlatformConfig", "PoolerSettings",
    "PostgresSettings", "S3Repo", "Section", "Tenant", "TimescaleSettings", "decode",
    "exporter_ports",
    "from_pulumi", "full_backup_max_age_seconds", "load", "memory_bytes", "parse_aws",
    "parse_backup", "parse_docker", "parse_ha", "parse_monitoring", "parse_pooler",
    "parse_postgres", "parse_tenants", "parse_timescaledb", "schedule_period_hours",
]
