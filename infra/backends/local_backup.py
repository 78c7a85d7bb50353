"""Dynamic provider: the local stack's pgBackRest stanza, posix repository and schedule.

Pickled by reference into the stack's state (see local_postgres.py): keep this
module importable without side effects and at this path. Creating it makes the
stanza and a first full backup (`--start-fast`); a changed retention rewrites
pgbackrest.conf and expires what the new retention no longer keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra import render
from infra.backends import local_move
from infra.backup import stanza
from infra.backup.restore import remove_all
from infra.data_loss import refuse_data_loss
from infra.hostctl import drift
from infra.hostctl.pgbackrest import PgBackRest
from infra.resource_types import keep_urn

PROVIDER_VERSION = "2"


def _pgbr(props: dict[str, Any]) -> PgBackRest:
    # The password reaches pgbackrest through its environment only, never a file.
    return PgBackRest(config=Path(props["config_path"]), stanza=props["stanza"],
                      password=props.get("superuser_password") or None)


def _paths(props: dict[str, Any]) -> render.BackupPaths:
    return render.BackupPaths(repo_path=props["repo_path"], log_path=props["log_path"],
                              lock_path=props["lock_path"], spool_path=props["spool_path"])


def _restores_dir(props: dict[str, Any]) -> Path:
    """Stacks made before `restores_dir` was an input keep restores beside pgbackrest/."""
    if props.get("restores_dir"):
        return Path(props["restores_dir"])
    return Path(props["config_path"]).parent.parent / "restores"


def _write(props: dict[str, Any]) -> None:
    stanza.write_files(_pgbr(props), props["pgbackrest_conf"], _paths(props),
                       schedule_path=Path(props["schedule_path"]),
                       schedule_text=props["schedule"])


class BackupProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        _write(props)
        label = stanza.initialise(_pgbr(props))
        return CreateResult(id_=props["stanza"], outs={**props, "first_backup": label,
                                                       "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """pgbackrest.conf changed on disk (refresh shows it; up rewrites it)."""
        found = drift.changed_files({props["config_path"]: props.get("pgbackrest_conf")})
        return ReadResult(id_=id_, outs={**props, "drift": found})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A new repo_path or config_path (a new state_dir) moves the repository: update.
        # A new stanza is a new repository: the old one, and every backup in it, goes.
        replaces = [k for k in ("stanza",) if olds.get(k) != news.get(k)]
        refuse_data_loss(replaces, olds, news,
                         what=f"the backup repository of stanza {olds.get('stanza')!r} and "
                              "every backup in it",
                         keys={"stanza": "pg-platform:backup.stanza"})
        if not replaces:
            local_move.refuse_occupied(olds.get("repo_path"), news.get("repo_path"),
                                       "the backup repository")
        changed = [k for k in news if k not in ("first_backup", "drift", "allow_data_loss")
                   and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or drift.drifted(olds), replaces=replaces,
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if olds.get("passfile"):  # provider version 1 kept the password in a passfile
            Path(olds["passfile"]).unlink(missing_ok=True)
        if olds.get("repo_path") != news.get("repo_path"):
            local_move.move_dir(Path(olds["repo_path"]), Path(news["repo_path"]),
                                "the backup repository")
        for key in ("config_path", "schedule_path"):
            if olds.get(key) and olds[key] != news.get(key):
                Path(olds[key]).unlink(missing_ok=True)
        _write(news)
        pgbr = _pgbr(news)
        pgbr.stanza_create()
        if olds.get("pgbackrest_conf") != news.get("pgbackrest_conf"):
            pgbr.expire()
        return UpdateResult(outs={**news, "first_backup": olds.get("first_backup", ""),
                                  "drift": []})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Every restored copy of the stack goes too: stopped, and its directory deleted.
        remove_all(_restores_dir(props))
        stanza.remove(_pgbr(props), _paths(props), Path(props["schedule_path"]))
        if props.get("passfile"):
            Path(props["passfile"]).unlink(missing_ok=True)


class Backup(Resource, module="local", name="Backup"):
    """pgBackRest for the primary; the owner password (for its commands' env) is a secret."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(BackupProvider(), name,
                         {**props, "first_backup": None,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["superuser_password"]))
