"""Dynamic provider: a streaming read replica as processes on this machine.

Pickled by reference into the stack's state (see local_postgres.py): keep this
module importable without side effects and at this path. Each replica owns a
physical slot on the primary; deleting the replica stops it, removes its data
and drops that slot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
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
from infra.backends.local_postgres import apply_config
from infra.hostctl import drift, standby
from infra.resource_types import keep_urn

logger = logging.getLogger(__name__)

PROVIDER_VERSION = "3"
_REPLACE_KEYS = ("data_dir", "slot", "primary_host", "primary_port", "replication_role")


def _server(props: dict[str, Any]) -> hostctl.Server:
    return hostctl.Server(data_dir=Path(props["data_dir"]), port=int(props["port"]),
                          host=props["host"])


def _primary_dsn(props: dict[str, Any]) -> str:
    primary = hostctl.Server(Path("/nonexistent"), int(props["primary_port"]),
                             props["primary_host"])
    return primary.dsn(props["superuser"], props["superuser_password"])


def _own_dsn(props: dict[str, Any]) -> str:
    return _server(props).dsn(props["superuser"], props["superuser_password"])


def _passfile(props: dict[str, Any]) -> Path | None:
    """Write the replication passfile (0600, the service user's); None for old inputs."""
    if not props.get("passfile"):
        return None
    path = Path(props["passfile"])
    standby.write_passfile(path, props["primary_host"], int(props["primary_port"]),
                           props["replication_role"], props["replication_password"])
    return path


def _start(props: dict[str, Any]) -> Callable[[hostctl.Server], None]:
    """Starts the standby; its WAL receiver reads the password from the passfile."""
    return lambda server: standby.start(server, props["replication_password"],
                                        passfile=_passfile(props))


def _forget_passfile(props: dict[str, Any]) -> None:
    if props.get("passfile"):
        Path(props["passfile"]).unlink(missing_ok=True)


class ReplicaProvider(ResourceProvider):
    """pg_basebackup through a new slot, the replica's own config, standby.signal, start."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        server = _server(props)
        # A slot left by an interrupted run holds WAL from long ago: start afresh.
        standby.drop_slot(_primary_dsn(props), props["slot"])
        try:
            standby.reserve_slot(_primary_dsn(props), props["slot"])
            standby.basebackup(server, primary_host=props["primary_host"],
                               primary_port=int(props["primary_port"]),
                               user=props["replication_role"],
                               password=props["replication_password"], slot=props["slot"],
                               passfile=_passfile(props))
            standby.make_standby(server, props["postgresql_conf"], props["pg_hba_conf"],
                                 Path(props["socket_dir"]))
            _start(props)(server)
            server.wait_ready()
            standby.wait_streaming(_own_dsn(props))
        except Exception:
            server.remove()
            standby.drop_slot(_primary_dsn(props), props["slot"])
            raise
        return CreateResult(id_=str(server.data_dir), outs={**props, "running": True,
                                                            "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """A stopped or removed standby, its files edited, ALTER SYSTEM, its slot gone."""
        server = _server(props)
        if not server.exists():
            return ReadResult(id_="", outs={})
        data = server.data_dir
        found = drift.changed_files({str(data / "postgresql.conf"): props.get("postgresql_conf"),
                                     str(data / "pg_hba.conf"): props.get("pg_hba_conf")})
        found += drift.auto_conf_drift(data)
        found += drift.slot_drift(_primary_dsn(props), props["slot"])
        return ReadResult(id_=id_, outs={**props, "running": server.is_running(),
                                         "drift": found})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in _REPLACE_KEYS if olds.get(k) != news.get(k)]
        changed = [k for k in news if k not in ("running", "drift")
                   and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or olds.get("running") is False
                          or drift.drifted(olds), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        server = _server(news)
        if olds.get("passfile") != news.get("passfile"):
            _forget_passfile(olds)
        hostctl.write_file(server.data_dir / "postgresql.conf", news["postgresql_conf"])
        hostctl.write_file(server.data_dir / "pg_hba.conf", news["pg_hba_conf"])
        hostctl.make_dir(Path(news["socket_dir"]), 0o755)
        if olds.get("replication_password") != news.get("replication_password") or \
                olds.get("passfile") != news.get("passfile"):
            server.stop()  # the WAL receiver reads the new passfile at start
        drift.clear_auto_conf(server.data_dir)
        if drift.slot_drift(_primary_dsn(news), news["slot"]):
            # Reserved now: the standby resumes if the primary still has the WAL it needs.
            standby.reserve_slot(_primary_dsn(news), news["slot"])
        apply_config(olds, news, start=_start(news))
        return UpdateResult(outs={**news, "running": True, "drift": []})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _server(props).remove()
        _forget_passfile(props)
        with contextlib.suppress(OSError):  # its own socket directory, empty once stopped
            Path(props["socket_dir"]).rmdir()
        primary = hostctl.Server(Path("/nonexistent"), int(props["primary_port"]),
                                 props["primary_host"])
        if hostctl.port_open(primary.host, primary.port):
            standby.drop_slot(_primary_dsn(props), props["slot"])
        else:
            logger.warning("primary %s:%s is down; slot %s not dropped", primary.host,
                           primary.port, props["slot"])


class Replica(Resource, module="local", name="Replica"):
    """A local streaming replica; passwords are secrets."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(ReplicaProvider(), name,
                         {**props, "running": None,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["superuser_password", "replication_password"]))
