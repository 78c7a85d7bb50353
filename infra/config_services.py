"""Settings of the services around PostgreSQL: PgBouncer and pgBackRest.

Kept apart from infra/config.py so that file stays about PostgreSQL itself.
The pooler is sized against the cluster here, before any resource exists: a
pool that could not get its server connections is rejected with the numbers.
"""

from __future__ import annotations

import dataclasses
import re

from infra.config import (
    DIRECT_CONNECTION_HEADROOM,
    BackupSchedule,
    BackupSettings,
    PoolerSettings,
    PostgresSettings,
    S3Repo,
    Section,
)
from infra.errors import ConfigError

_STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_CRON_FIELD = re.compile(r"^(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*$")
_S3_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?$")
_DAY = 86400


def parse_pooler(sec: Section, pg: PostgresSettings) -> PoolerSettings:
    """PgBouncer settings, checked against the primary's connection limits."""
    default_pool = sec.int("default_pool_size", 20, 1, 10000)
    settings = PoolerSettings(
        # postgres.port + 1000: PgBouncer's own 6432 for the usual 5432.
        port=sec.int("port", pg.port + 1000 if pg.port + 1000 <= 65535 else 6432, 1024, 65535),
        pool_mode=sec.choice("pool_mode", "transaction", ("session", "transaction", "statement")),
        default_pool_size=default_pool,
        min_pool_size=sec.int("min_pool_size", 0, 0, 10000),
        reserve_pool_size=sec.int("reserve_pool_size", 0, 0, 10000),
        reserve_pool_timeout=sec.int("reserve_pool_timeout", 5, 0, 3600),
        max_client_conn=sec.int("max_client_conn", 1100, 1, 100000),
        max_db_connections=sec.int("max_db_connections", 0, 0, 10000),
        server_idle_timeout=sec.int("server_idle_timeout", 600, 0, _DAY),
        server_lifetime=sec.int("server_lifetime", 3600, 0, _DAY),
        server_connect_timeout=sec.int("server_connect_timeout", 15, 1, 3600),
        query_wait_timeout=sec.int("query_wait_timeout", 120, 0, _DAY),
        client_idle_timeout=sec.int("client_idle_timeout", 0, 0, _DAY),
        idle_transaction_timeout=sec.int("idle_transaction_timeout", 0, 0, _DAY),
        admin_user=sec.ident("admin_user", "pgbouncer_admin"),
        log_connections=sec.flag("log_connections", False),
    )
    sec.finish()
    if settings.admin_user in (pg.owner_role, pg.app_role, pg.replication_role, "postgres"):
        raise ConfigError(f"{sec.where('admin_user')}={settings.admin_user!r}: the console "
                          "user must differ from the owner, app and replication roles and "
                          "from 'postgres'")
    if settings.min_pool_size > settings.default_pool_size:
        raise ConfigError(f"{sec.where('min_pool_size')}={settings.min_pool_size} exceeds "
                          f"{sec.where('default_pool_size')}={settings.default_pool_size}")
    _check_fits(sec, settings, pg)
    return settings


def _check_fits(sec: Section, pooler: PoolerSettings, pg: PostgresSettings) -> None:
    """One pool (the app role's) per database entry; it must fit beside direct connections.

    Replicas run with the primary's max_connections (a hot standby requires at
    least that), so the same limit holds for the read-only entry.
    """
    room = pg.max_connections - pg.superuser_reserved_connections - DIRECT_CONNECTION_HEADROOM
    need = pooler.server_connections_per_pool
    if need <= room:
        return
    parts = f"{sec.where('default_pool_size')}={pooler.default_pool_size}"
    if pooler.reserve_pool_size:
        parts += f" + reserve_pool_size={pooler.reserve_pool_size}"
    if pooler.max_db_connections:
        parts += f" (capped by max_db_connections={pooler.max_db_connections})"
    raise ConfigError(
        f"{parts} = {need} server connections per pool do not fit in "
        f"pg-platform:postgres.max_connections={pg.max_connections} minus "
        f"superuser_reserved_connections={pg.superuser_reserved_connections} minus "
        f"{DIRECT_CONNECTION_HEADROOM} kept for direct connections (migrations, backups, "
        f"monitoring) = {room}; lower the pool or raise max_connections")


def _cron(sec: Section, name: str, default: str) -> str:
    value = sec.get(name, default)
    if value is None or value == "":
        return ""
    fields = value.split() if isinstance(value, str) else []
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected a cron expression of five "
                          "fields (minute hour day-of-month month day-of-week) made of "
                          "digits, *, -, / and commas, such as '0 1 * * 0', or '' to disable")
    return " ".join(fields)


def _schedule(sec: Section) -> BackupSchedule:
    d = BackupSchedule()
    schedule = BackupSchedule(full=_cron(sec, "full", d.full), diff=_cron(sec, "diff", d.diff),
                              incr=_cron(sec, "incr", d.incr))
    sec.finish()
    if not schedule.full:
        raise ConfigError(f"{sec.where('full')}: a full-backup schedule is required; "
                          "diff and incr backups build on a full one")
    return schedule


def _s3(sec: Section, default_region: str) -> S3Repo:
    # Optional: a backend that creates the bucket (aws) fills in the name it made.
    bucket = sec.get("bucket", "")
    if not isinstance(bucket, str) or (
            bucket and not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket)):
        raise ConfigError(f"{sec.where('bucket')}={bucket!r}: expected an S3 bucket name "
                          "(3-63 characters: a-z, 0-9, . and -)")
    region = sec.text("region", default_region)
    endpoint = sec.text("endpoint", f"s3.{region}.amazonaws.com")
    if not _HOSTNAME.match(endpoint):
        raise ConfigError(f"{sec.where('endpoint')}={endpoint!r}: expected a host name such "
                          "as 's3.eu-west-1.amazonaws.com' (no scheme; pgBackRest uses HTTPS)")
    path = sec.text("path", "/pgbackrest")
    if not _S3_PATH.match(path):
        raise ConfigError(f"{sec.where('path')}={path!r}: expected an absolute prefix such "
                          "as '/pgbackrest'")
    repo = S3Repo(bucket=bucket, region=region, endpoint=endpoint, path=path,
                  uri_style=sec.choice("uri_style", "host", ("host", "path")))
    sec.finish()
    return repo


def parse_backup(sec: Section, backend: str, aws_region: str | None) -> BackupSettings:
    """pgBackRest settings; prod (aws) defaults to an S3 repository."""
    stanza = sec.get("stanza", "main")
    if not isinstance(stanza, str) or not _STANZA.match(stanza):
        raise ConfigError(f"{sec.where('stanza')}={stanza!r}: expected letters, digits, _ "
                          "and -, starting with a letter or digit, at most 63 characters")
    repo = sec.choice("repo", "s3" if backend == "aws" else "posix", ("posix", "s3"))
    full_type = sec.choice("retention_full_type", "count", ("count", "time"))
    settings = BackupSettings(
        stanza=stanza, repo=repo,
        retention_full=sec.int("retention_full", 2, 1, 9999999),
        retention_full_type=full_type,
        retention_diff=sec.int("retention_diff", 6, 1, 9999999),
        compress_type=sec.choice("compress_type", "lz4", ("none", "gz", "lz4", "zst", "bz2")),
        process_max=sec.int("process_max", 2, 1, 64),
        schedule=_schedule(sec.section("schedule")),
    )
    s3_sec = sec.section("s3")
    if repo == "s3":
        settings = dataclasses.replace(settings, s3=_s3(s3_sec, aws_region or "us-east-1"))
    elif s3_sec.raw:
        raise ConfigError(f"{s3_sec.where(next(iter(s3_sec.raw)))}: S3 settings need "
                          f"{sec.where('repo')}='s3' (it is {repo!r})")
    sec.finish()
    return settings
