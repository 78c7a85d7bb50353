"""Dynamic provider: PgBouncer as a process on this machine.

Pickled by reference into the stack's state (see local_postgres.py): keep this
module importable without side effects and at this path. A change to
pgbouncer.ini or the auth file is a reload (SIGHUP), which keeps clients
connected; only a new listen address or port restarts the daemon.
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

from infra import hostctl
from infra.hostctl import drift
from infra.hostctl.pgbouncer import PgBouncer
from infra.resource_types import keep_urn

PROVIDER_VERSION = "2"


def _bouncer(props: dict[str, Any]) -> PgBouncer:
    return PgBouncer(ini_path=Path(props["ini_path"]), pid_file=Path(props["pid_file"]),
                     host=props["host"], port=int(props["port"]),
                     log_file=Path(props["log_file"]))


def _write(props: dict[str, Any]) -> None:
    ini = Path(props["ini_path"])
    hostctl.make_dir(ini.parent, 0o700)
    hostctl.make_dir(Path(props["socket_dir"]), 0o755)
    hostctl.make_dir(Path(props["auth_file"]).parent, 0o700)
    hostctl.write_file(Path(props["auth_file"]), props["userlist"])
    hostctl.write_file(ini, props["pgbouncer_ini"])


class PoolerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        _write(props)
        _bouncer(props).start()
        return CreateResult(id_=props["ini_path"], outs={**props, "running": True, "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """A stopped daemon, and hand edits of pgbouncer.ini or the auth file."""
        found = drift.changed_files({props["ini_path"]: props.get("pgbouncer_ini"),
                                     props["auth_file"]: props.get("userlist")})
        return ReadResult(id_=id_, outs={**props, "running": _bouncer(props).is_running(),
                                         "drift": found})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("ini_path",) if olds.get(k) != news.get(k)]
        changed = [k for k in news if k not in ("running", "drift")
                   and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or olds.get("running") is False
                          or drift.drifted(olds), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old, new = _bouncer(olds), _bouncer(news)
        _write(news)
        if olds.get("auth_file") and olds["auth_file"] != news["auth_file"]:
            Path(olds["auth_file"]).unlink(missing_ok=True)  # it moved to the secrets folder
        if (olds.get("host"), olds.get("port"), olds.get("socket_dir")) != (
                news.get("host"), news.get("port"), news.get("socket_dir")):
            old.stop()
        if new.is_running():
            new.reload()
        else:
            new.start()
        return UpdateResult(outs={**news, "running": True, "drift": []})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _bouncer(props).stop()
        for key in ("ini_path", "auth_file", "pid_file"):
            Path(props[key]).unlink(missing_ok=True)


class Pooler(Resource, module="local", name="Pooler"):
    """PgBouncer; the auth file (SCRAM verifiers) is kept as a secret."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(PoolerProvider(), name,
                         {**props, "running": None,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["userlist"]))
