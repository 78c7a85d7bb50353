"""pgBackRest's files: pgbackrest.conf, the cron schedule of backups, a restore's settings."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from infra.config import PlatformConfig
from infra.errors import RenderError
from infra.render.postgres import HostPaths
from infra.render.template import pgquote, render
from infra.roles import BREAK_GLASS


@dataclass(frozen=True)
class BackupPaths:
    """Where pgBackRest keeps its repository (posix only), logs, locks and spool."""

    repo_path: str
    log_path: str
    lock_path: str
    spool_path: str


def _break_glass() -> str:
    """pgBackRest reaches the primary on its socket as the bootstrap superuser (peer)."""
    return BREAK_GLASS


def pgbackrest_conf(cfg: PlatformConfig, host: HostPaths, paths: BackupPaths,
                    pg_port: int | None = None, others: tuple[HostPaths, ...] = ()) -> str:
    """pgbackrest.conf with one stanza for the primary; S3 options when the repo is s3.

    `others` adds pg2, pg3... for the other nodes of a Patroni cluster on this host:
    pgBackRest then finds whichever of them is the primary for each backup.
    """
    s3 = cfg.backup.s3
    if cfg.backup.repo == "s3" and (s3 is None or not s3.bucket):
        raise RenderError("pgbackrest.conf: the S3 repository has no bucket; set "
                          "pg-platform:backup.s3.bucket or let the backend fill it in")
    return render("pgbackrest.conf.j2", backup=cfg.backup, host=host, paths=paths,
                  pg_port=pg_port or cfg.postgres.port, pg_user=_break_glass(),
                  others=others)


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


def restore_settings(host: str, port: int, socket_dir: str) -> str:
    """Lines appended to a restored copy's postgresql.auto.conf: its own port and socket,
    and no archiving or streaming into the source's repository or primary."""
    return "\n".join([
        "# pg-platform restore: its own port and socket; no archiving into the source's repo.",
        f"listen_addresses = {pgquote(host)}",
        f"port = {port}",
        f"unix_socket_directories = {pgquote(socket_dir)}",
        "archive_mode = 'off'",
        "primary_conninfo = ''",
        "primary_slot_name = ''",
        "",
    ])
