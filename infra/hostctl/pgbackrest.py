"""Run pgBackRest commands for one stanza, as the database's OS user.

Shared by the local backend's dynamic provider, the restore and drill commands
and the tests. Commands that connect to PostgreSQL (stanza-create, check,
backup) get the owner role's password in PGPASSWORD, only in the environment
of the pgbackrest process, so it never rests in a file (or in a libpq passfile
named by PGPASSFILE, on hosts that keep one).

With `exec_prefix` (the dev stack: `docker exec -u postgres <primary container>`)
pgbackrest runs wherever the prefix puts it, as the user the prefix names, and
this process stays who it is (the Docker CLI needs the caller's access to the
engine, not the `postgres` user's). Nothing of this process's environment
reaches the command there, so a password or passfile is refused rather than
silently dropped: in the container pgBackRest logs in by peer on the socket.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.errors import ProcessError
from infra.hostctl.files import make_dir
from infra.hostctl.proc import run

logger = logging.getLogger(__name__)

PGBACKREST = "pgbackrest"
BACKUP_TYPES = ("full", "diff", "incr")


@dataclass(frozen=True)
class PgBackRest:
    """pgbackrest with a given config file and stanza."""

    config: Path
    stanza: str
    passfile: Path | None = None
    password: str | None = field(default=None, repr=False)
    exec_prefix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.exec_prefix and (self.passfile or self.password):
            raise ValueError("pgbackrest through an exec prefix logs in by peer where it "
                             "runs; a passfile or password would not reach it")

    def argv(self, command: str, *options: str) -> list[str]:
        """The command line: no secret is ever on it."""
        return [*self.exec_prefix, PGBACKREST, f"--config={self.config}",
                f"--stanza={self.stanza}", *options, command]

    def run(self, command: str, *options: str, timeout: float = 600.0) -> str:
        env = {"PGPASSFILE": str(self.passfile)} if self.passfile else {}
        if self.password:
            env["PGPASSWORD"] = self.password
        return run(self.argv(command, *options),
                   what=f"pgbackrest {command} ({shlex.join(options)})".rstrip(),
                   timeout=timeout, env=env, switch_user=not self.exec_prefix)

    def stanza_create(self, lock_wait: float = 60.0) -> None:
        """Safe to repeat: pgBackRest accepts an existing stanza that matches the cluster.

        It takes the stanza's archive lock, which a running archive-push holds while it
        pushes a segment: on a node that archives (a Patroni node once its bootstrap made
        the stanza, any primary on a later `up`) it can meet one and fail at once with
        exit 50 (LockAcquireError). pgBackRest 2.45 has no option to wait for the lock,
        so this retries for up to `lock_wait` seconds; any other failure is raised as is.
        """
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                self.run("stanza-create")
                return
            except ProcessError as exc:
                if "[050]" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def check(self) -> None:
        """Forces a WAL switch and waits until that segment reached the repository."""
        self.run("check")

    def backup(self, kind: str = "full", *, start_fast: bool = True) -> None:
        if kind not in BACKUP_TYPES:
            raise ValueError(f"backup type {kind!r}: allowed are {', '.join(BACKUP_TYPES)}")
        options = [f"--type={kind}"] + (["--start-fast"] if start_fast else [])
        self.run("backup", *options, timeout=3600)

    def expire(self) -> None:
        """Apply the retention in pgbackrest.conf now rather than after the next backup."""
        self.run("expire")

    def info(self) -> dict[str, Any]:
        """The stanza's entry of `pgbackrest info --output=json`."""
        data = json.loads(self.run("info", "--output=json"))
        for entry in data:
            if entry.get("name") == self.stanza:
                return dict(entry)
        return {}

    def restore(self, data_dir: Path, *, target: str | None = None,
                target_action: str = "promote") -> None:
        """Restore into `data_dir` (new and empty); to a time when `target` is given."""
        make_dir(data_dir.parent, 0o755)
        make_dir(data_dir, 0o700)
        options = [f"--pg1-path={data_dir}"]
        if target:
            options += ["--type=time", f"--target={target}",
                        f"--target-action={target_action}"]
        else:
            options += ["--type=default"]
        self.run("restore", *options, timeout=3600)


def backups(info: dict[str, Any]) -> list[dict[str, Any]]:
    return list(info.get("backup", []))


def full_backups(info: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in backups(info) if b.get("type") == "full"]
