"""`pg-platform:backup`: pgBackRest's repository, retention and schedule."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime

from croniter import CroniterError, croniter

from infra.config.section import Section
from infra.errors import ConfigError

_STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_CRON_FIELD = re.compile(r"^(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?(,(\*|[0-9]+(-[0-9]+)?)(/[0-9]+)?)*$")
_S3_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DEFAULT_S3_REGION = "us-east-1"


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


def _cron(sec: Section, name: str, default: str) -> str:
    value = sec.get(name, default)
    if value is None or value == "":
        return ""
    fields = value.split() if isinstance(value, str) else []
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected a cron expression of five "
                          "fields (minute hour day-of-month month day-of-week) made of "
                          "digits, *, -, / and commas, such as '0 1 * * 0', or '' to disable")
    expr = " ".join(fields)
    try:  # ranges (minute 0-59, hour 0-23 ...), zero steps, dates that never come
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError as exc:
        raise ConfigError(f"{sec.where(name)}={value!r}: {exc or 'never fires'}; allowed are "
                          "minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week "
                          "0-7, steps of 1 or more, on a date that exists") from None
    return expr


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
    d = S3Repo(region=default_region, endpoint="")
    bucket = sec.get("bucket", d.bucket)
    if not isinstance(bucket, str) or (bucket and not _BUCKET.match(bucket)):
        raise ConfigError(f"{sec.where('bucket')}={bucket!r}: expected an S3 bucket name "
                          "(3-63 characters: a-z, 0-9, . and -)")
    region = sec.text("region", default_region)
    endpoint = sec.text("endpoint", f"s3.{region}.amazonaws.com")
    if not _HOSTNAME.match(endpoint):
        raise ConfigError(f"{sec.where('endpoint')}={endpoint!r}: expected a host name such "
                          "as 's3.eu-west-1.amazonaws.com' (no scheme; pgBackRest uses HTTPS)")
    path = sec.text("path", d.path)
    if not _S3_PATH.match(path):
        raise ConfigError(f"{sec.where('path')}={path!r}: expected an absolute prefix such "
                          "as '/pgbackrest'")
    repo = S3Repo(bucket=bucket, region=region, endpoint=endpoint, path=path,
                  uri_style=sec.choice("uri_style", d.uri_style, ("host", "path")))
    sec.finish()
    return repo


def parse_backup(sec: Section, backend: str, aws_region: str | None) -> BackupSettings:
    """pgBackRest settings; prod (aws) defaults to an S3 repository."""
    d = BackupSettings()
    stanza = sec.get("stanza", d.stanza)
    if not isinstance(stanza, str) or not _STANZA.match(stanza):
        raise ConfigError(f"{sec.where('stanza')}={stanza!r}: expected letters, digits, _ "
                          "and -, starting with a letter or digit, at most 63 characters")
    repo = sec.choice("repo", "s3" if backend == "aws" else d.repo, ("posix", "s3"))
    settings = BackupSettings(
        stanza=stanza, repo=repo,
        retention_full=sec.int("retention_full", d.retention_full, 1, 9999999),
        retention_full_type=sec.choice("retention_full_type", d.retention_full_type,
                                       ("count", "time")),
        retention_diff=sec.int("retention_diff", d.retention_diff, 1, 9999999),
        compress_type=sec.choice("compress_type", d.compress_type,
                                 ("none", "gz", "lz4", "zst", "bz2")),
        process_max=sec.int("process_max", d.process_max, 1, 64),
        schedule=_schedule(sec.section("schedule")),
    )
    s3_sec = sec.section("s3")
    if repo == "s3":
        settings = dataclasses.replace(settings, s3=_s3(s3_sec, aws_region or DEFAULT_S3_REGION))
    elif s3_sec.raw:
        raise ConfigError(f"{s3_sec.where(next(iter(s3_sec.raw)))}: S3 settings need "
                          f"{sec.where('repo')}='s3' (it is {repo!r})")
    sec.finish()
    return settings
