"""Set up a host's pgBackRest: directories, config, stanza and the first full backup.

Used by the local backend's provider and by the tests, so both set up backups
the same way.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from infra import hostctl, render
from infra.hostctl.pgbackrest import PgBackRest, full_backups

logger = logging.getLogger(__name__)


def write_files(pgbr: PgBackRest, conf_text: str, paths: render.BackupPaths, *,
                schedule_path: Path | None = None, schedule_text: str = "") -> None:
    """Config, schedule and the directories pgBackRest writes, owned by the service user."""
    hostctl.make_dir(pgbr.config.parent, 0o700)
    for d in (paths.log_path, paths.lock_path, paths.spool_path):
        hostctl.make_dir(Path(d), 0o700)
    repo = Path(paths.repo_path)
    hostctl.make_dir(repo.parent, 0o700)
    hostctl.make_dir(repo, 0o750)
    hostctl.write_file(pgbr.config, conf_text, 0o640)
    if schedule_path is not None:
        hostctl.write_file(schedule_path, schedule_text, 0o644)


def initialise(pgbr: PgBackRest) -> str:
    """stanza-create, and a full backup unless one exists (else `check`); its label.

    A new backup needs no `check` first: pgBackRest's backup waits until the WAL it needs
    has reached the repository (archive-check, on by default), so a broken
    archive_command fails it after the same archive-timeout `check` would wait, and the
    first `up` saves the WAL switch and wait `check` costs (about 0.7 s here).
    """
    pgbr.stanza_create()
    fulls = full_backups(pgbr.info())
    if not fulls:
        pgbr.backup("full", start_fast=True)
        fulls = full_backups(pgbr.info())
    else:
        pgbr.check()
    return str(fulls[-1]["label"]) if fulls else ""


def remove(pgbr: PgBackRest, paths: render.BackupPaths,
           schedule_path: Path | None = None) -> None:
    """Forget a local repository: its backups, WAL archive, logs and config."""
    for d in (paths.repo_path, paths.log_path, paths.lock_path, paths.spool_path):
        shutil.rmtree(d, ignore_errors=True)
    pgbr.config.unlink(missing_ok=True)
    if schedule_path is not None:
        schedule_path.unlink(missing_ok=True)
