"""Pure renderers: settings in, file texts out.

Shared by every backend, so a file rendered for the local stack is the file a
Docker container or an EC2 host receives, given the same settings and paths.
Templates hold no logic beyond loops and conditionals; quoting lives here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from infra import scram
from infra.config import PlatformConfig
from infra.errors import RenderError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def pgquote(value: object) -> str:
    """Quote a value for postgresql.conf: single quotes, embedded quotes doubled."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError(f"value {text!r} spans lines; postgresql.conf values are one line")
    return "'" + text.replace("'", "''") + "'"


def ini(value: object) -> str:
    """A value for pgbouncer.ini: one line, no comment or quote characters to misread."""
    text = str(value)
    if any(c in text for c in "\n\r;#'\" ") or not text:
        raise RenderError(f"value {text!r} cannot be written to pgbouncer.ini: it must be "
                          "non-empty, one line, without spaces, quotes, ';' or '#'")
    return text


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pgquote"] = pgquote
    env.filters["ini"] = ini
    return env


def render(template: str, **context: Any) -> str:
    """Render one template; a missing variable is an error, never an empty string."""
    try:
        return _env().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"templates/{template}: {exc}") from exc


@dataclass(frozen=True)
class HostPaths:
    """Where a host keeps its files; the only thing that differs between backends.

    `pgbackrest_config` names the host's pgbackrest.conf; when it is None the
    server does not archive WAL (test servers, hosts without a repository).
    """

    data_dir: str
    socket_dir: str
    pgbackrest_config: str | None = None


@dataclass(frozen=True)
class TlsFiles:
    """Where a host keeps the platform's TLS files (made by infra.tls); the key is 0600."""

    cert_file: str
    key_file: str
    ca_file: str


@dataclass(frozen=True)
class Standby:
    """How a replica reaches its primary; never with a password in the conninfo.

    The password comes from the libpq passfile named here (hosts), or, when
    `passfile` is None, from the postmaster's environment (the local stack, which
    keeps no password on disk).
    """

    primary_host: str
    primary_port: int
    user: str
    slot: str
    passfile: str | None = None
    # The CA that signed the primary's certificate: replication then runs over verified TLS.
    sslrootcert: str | None = None

    @property
    def conninfo(self) -> str:
        parts = {"host": self.primary_host, "port": str(self.primary_port), "user": self.user}
        if self.passfile:
            parts["passfile"] = self.passfile
        parts["application_name"] = self.slot
        if self.sslrootcert:
            parts.update(sslmode="verify-full", sslrootcert=self.sslrootcert)
        for key, value in parts.items():
            if any(c in value for c in " '\\\n"):
                raise RenderError(f"primary_conninfo {key}={value!r}: spaces, quotes and "
                                  "backslashes are not allowed")
        return " ".join(f"{k}={v}" for k, v in parts.items())


def preload_libraries(timescaledb: bool) -> tuple[str, ...]:
    return ("pg_stat_statements", "timescaledb") if timescaledb else ("pg_stat_statements",)


def archive_command(cfg: PlatformConfig, pgbackrest_config: str) -> str:
    """The shell command PostgreSQL runs for each WAL segment."""
    return (f"pgbackrest --config={shlex.quote(pgbackrest_config)} "
            f"--stanza={cfg.backup.stanza} archive-push %p")


def postgresql_conf(cfg: PlatformConfig, paths: HostPaths, *, timescaledb: bool,
                    port: int | None = None, listen: str | None = None,
                    standby: Standby | None = None, tls: TlsFiles | None = None) -> str:
    """postgresql.conf for a primary or replica; `port`/`listen` override the configured ones."""
    pg = cfg.postgres
    if port is not None:
        pg = replace(pg, port=port)
    if listen is not None:
        pg = replace(pg, listen_address=listen)
    archive = archive_command(cfg, paths.pgbackrest_config) if paths.pgbackrest_config else ""
    return render("postgresql.conf.j2", pg=pg, paths=paths,
                  preload=preload_libraries(timescaledb),
                  max_wal_senders=cfg.max_wal_senders, standby=standby,
                  archive_command=archive, tls=tls)


def pg_hba_conf(cfg: PlatformConfig, networks: tuple[str, ...] = ("127.0.0.1/32",)) -> str:
    """pg_hba.conf: scram-sha-256 for every entry, from the given networks only."""
    return render("pg_hba.conf.j2", networks=networks,
                  replication_role=cfg.postgres.replication_role)


@dataclass(frozen=True)
class PoolerPaths:
    """Where PgBouncer keeps its files; log_file/pid_file None leave them out (containers)."""

    auth_file: str
    socket_dir: str
    pid_file: str | None = None
    log_file: str | None = None


@dataclass(frozen=True)
class PoolerTargets:
    """Where PgBouncer listens and which servers it pools.

    Replicas share one port (PgBouncer 1.18 takes one port for a host list), as
    they do on separate hosts; the local backend gives each its own loopback address.
    """

    listen_address: str
    primary_host: str
    primary_port: int
    replica_hosts: tuple[str, ...] = ()
    replica_port: int = 5432


def pgbouncer_ini(cfg: PlatformConfig, paths: PoolerPaths, targets: PoolerTargets,
                  tls: TlsFiles | None = None) -> str:
    """pgbouncer.ini: a read-write entry for the primary and a read-only one over replicas.

    With `tls`, clients must use TLS and PgBouncer verifies the servers' certificates.
    """
    return render("pgbouncer.ini.j2", pooler=cfg.pooler, paths=paths, tls=tls,
                  database=cfg.postgres.database, listen_address=targets.listen_address,
                  primary_host=targets.primary_host, primary_port=targets.primary_port,
                  replica_hosts=targets.replica_hosts, replica_port=targets.replica_port)


def pooler_users(cfg: PlatformConfig, app_password: str, admin_password: str) -> dict[str, str]:
    """The auth file's users and their SCRAM verifiers (the server's own, for pass-through)."""
    return {cfg.postgres.app_role: scram.verifier(cfg.postgres.app_role, app_password),
            cfg.pooler.admin_user: scram.verifier(cfg.pooler.admin_user, admin_password)}


def userlist_txt(users: Mapping[str, str]) -> str:
    """PgBouncer's auth file; anything but a SCRAM verifier is refused, so no plaintext."""
    for user, verifier in users.items():
        if not verifier.startswith("SCRAM-SHA-256$") or '"' in verifier + user:
            raise RenderError(f"userlist entry for {user!r} is not a SCRAM-SHA-256 verifier; "
                              "the auth file never holds passwords")
    return render("userlist.txt.j2", users=sorted(users.items()))


@dataclass(frozen=True)
class BackupPaths:
    """Where pgBackRest keeps its repository (posix only), logs, locks and spool."""

    repo_path: str
    log_path: str
    lock_path: str
    spool_path: str


def pgbackrest_conf(cfg: PlatformConfig, host: HostPaths, paths: BackupPaths,
                    pg_port: int | None = None) -> str:
    """pgbackrest.conf with one stanza for the primary; S3 options when the repo is s3."""
    s3 = cfg.backup.s3
    if cfg.backup.repo == "s3" and (s3 is None or not s3.bucket):
        raise RenderError("pgbackrest.conf: the S3 repository has no bucket; set "
                          "pg-platform:backup.s3.bucket or let the backend fill it in")
    return render("pgbackrest.conf.j2", backup=cfg.backup, host=host, paths=paths,
                  pg_port=pg_port or cfg.postgres.port, pg_user=cfg.postgres.owner_role)


def backup_schedule(cfg: PlatformConfig, config_path: str, *, user: str = "postgres",
                    passfile: str | None = None) -> str:
    """An /etc/cron.d file with the full, diff and incr backups from `backup.schedule`."""
    sched = cfg.backup.schedule
    jobs = [(kind, when) for kind, when in
            (("full", sched.full), ("diff", sched.diff), ("incr", sched.incr)) if when]
    command = (f"pgbackrest --config={shlex.quote(config_path)} "
               f"--stanza={cfg.backup.stanza}")
    return render("pgbackrest.cron.j2", stanza=cfg.backup.stanza, config_path=config_path,
                  user=user, passfile=passfile, jobs=jobs, command=command)
