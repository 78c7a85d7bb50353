"""Dynamic providers for `ha.manager: patroni` on the local stack: etcd, Patroni
members, Patroni's dynamic configuration and HAProxy.

Pickled by reference into the stack's state like local_postgres: this module
must import without side effects and keep its path; bump PROVIDER_VERSION when
behaviour changes. Each `read` reports whether the processes run, so `pulumi
refresh` sees a member that is down and the next `pulumi up` starts it again.
"""

from __future__ import annotations

import json
import logging
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

from infra import hostctl, render
from infra.backup import stanza
from infra.hostctl.etcd import EtcdCluster, LocalMember
from infra.hostctl.haproxy import HaProxy
from infra.hostctl.patroni import PatroniProcess, apply_dynamic_config
from infra.hostctl.pgbackrest import PgBackRest
from infra.render.patroni import EtcdMember

logger = logging.getLogger(__name__)

PROVIDER_VERSION = "1"


def _tls(props: dict[str, Any]) -> render.TlsFiles:
    return render.TlsFiles(cert_file=props["cert_file"], key_file=props["key_file"],
                           ca_file=props["ca_file"])


def _changed(olds: dict[str, Any], news: dict[str, Any], skip: tuple[str, ...]) -> bool:
    return any(olds.get(k) != news.get(k) for k in news if k not in skip)


# etcd ---------------------------------------------------------------------------------

def _etcd(props: dict[str, Any]) -> EtcdCluster:
    members = tuple(LocalMember(EtcdMember(m["name"], m["host"], int(m["client_port"]),
                                           int(m["peer_port"])), Path(m["base"]))
                    for m in props["members"])
    return EtcdCluster(members, _tls(props))


class EtcdProvider(ResourceProvider):
    """All three members in one resource: none of them is healthy without a quorum."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        cluster = _etcd(props)
        cluster.write([m["config"] for m in props["members"]])
        cluster.start()
        return CreateResult(id_=props["members"][0]["base"], outs={**props, "healthy": 3})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props, "healthy": _etcd(props).healthy_count()})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        down = olds.get("healthy") != len(news["members"])
        return DiffResult(changes=down or _changed(olds, news, ("healthy",)), replaces=[],
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        cluster = _etcd(news)
        if [m["config"] for m in olds["members"]] != [m["config"] for m in news["members"]]:
            _etcd(olds).stop()
        cluster.write([m["config"] for m in news["members"]])
        cluster.start()
        return UpdateResult(outs={**news, "healthy": cluster.healthy_count()})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _etcd(props).remove()


class Etcd(Resource, module="local", name="EtcdCluster"):
    healthy: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(EtcdProvider(), name, {**props, "healthy": None,
                                                "provider_version": PROVIDER_VERSION}, opts)


# Patroni members --------------------------------------------------------------------

def _member(props: dict[str, Any]) -> PatroniProcess:
    return PatroniProcess(props["name"], props["host"], int(props["restapi_port"]),
                          Path(props["config_file"]), Path(props["data_dir"]), _tls(props))


def _sysid(proc: PatroniProcess) -> str:
    """The cluster's identity (the same on every member): a new one means new data."""
    return str((proc.status() or {}).get("database_system_identifier", ""))


def _member_state(props: dict[str, Any]) -> str:
    proc = _member(props)
    if not proc.daemon.is_running():
        return "stopped"
    return str((proc.status() or {}).get("state", "unknown"))


def _write_backup_files(files: dict[str, Any] | None) -> None:
    """pgbackrest.conf and its folders before a first start: the node's archive_command
    and its bootstrap's stanza-create (render/patroni.bootstrap_stanza) read them, and the
    Backup resource, which keeps them afterwards, waits for the leader."""
    if not files:
        return
    stanza.write_files(PgBackRest(Path(files["config_path"]), files["stanza"]),
                       files["pgbackrest_conf"],
                       render.BackupPaths(repo_path=files["repo_path"],
                                          log_path=files["log_path"],
                                          lock_path=files["lock_path"],
                                          spool_path=files["spool_path"]))


class MemberProvider(ResourceProvider):
    """One node: its patroni.yml (0600, secrets inside) and the Patroni process.

    A changed patroni.yml is a reload (SIGHUP); Patroni applies node-local changes
    itself and reports any restart it needs as pending_restart. Deleting a member
    stops it and removes its data; the leader then drops its slot, as Patroni drops
    slots of members that left the cluster.
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        proc = _member(props)
        hostctl.make_dir(Path(props["socket_dir"]), 0o755)
        _write_backup_files(props.get("backup_files"))
        proc.write_config(props["patroni_yml"])
        if props.get("join"):
            # A replica-to-be: started once the first node holds the initialize key, so
            # its Patroni starts up while that node still runs initdb, and never races it.
            proc.wait_initialized(timeout=float(props.get("start_timeout", 180)))
        proc.start()
        # A replica-to-be is made once it streams from the leader (what it is for, and
        # what the read-only pool needs); Patroni calls it "running" a poll later.
        proc.wait_running(timeout=float(props.get("start_timeout", 180)),
                          streams_on=(props["socket_dir"], int(props["port"]))
                          if props.get("join") else None)
        return CreateResult(id_=props["config_file"],
                            outs={**props, "state": "running", "system_identifier": _sysid(proc)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props, "state": _member_state(props)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("data_dir", "config_file", "name") if olds.get(k) != news.get(k)]
        down = olds.get("state") != "running"
        # `join` only orders a first start and `backup_files` serve only it (create); a
        # member made before them had none. The Backup resource keeps pgbackrest.conf.
        return DiffResult(changes=down or bool(replaces) or _changed(olds, news, (
                              "state", "system_identifier", "join", "backup_files")),
                          replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        proc = _member(news)
        proc.write_config(news["patroni_yml"])
        if proc.daemon.is_running():
            proc.reload()
        else:
            proc.start()
        proc.wait_running(timeout=float(news.get("start_timeout", 180)))
        return UpdateResult(outs={**news, "state": "running", "system_identifier": _sysid(proc)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        proc = _member(props)
        proc.remove()
        Path(props["config_file"]).unlink(missing_ok=True)


class Member(Resource, module="local", name="PatroniMember"):
    state: pulumi.Output[str]
    system_identifier: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["patroni_yml"]))
        super().__init__(MemberProvider(), name, {**props, "state": None,
                                                  "system_identifier": None,
                                                  "provider_version": PROVIDER_VERSION}, opts)


# Dynamic configuration --------------------------------------------------------------

class DynamicConfigProvider(ResourceProvider):
    """Patroni's cluster-wide settings (ttl, synchronous_mode, PostgreSQL parameters).

    bootstrap.dcs seeds them once; later changes are PATCHed to /config on any
    member, and a restart they need is done replicas first, the leader last.
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._apply(props)
        return CreateResult(id_=f"{props['scope']}-config", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=_changed(olds, news, ()), replaces=[],
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._apply(news)
        return UpdateResult(outs=news)

    @staticmethod
    def _apply(props: dict[str, Any]) -> None:
        procs = [_member(m) for m in props["members"]]
        dcs = json.loads(props["dcs"])
        apply_dynamic_config(procs, props["scope"], dcs, settle=dcs.get("loop_wait", 5) + 1)


class DynamicConfig(Resource, module="local", name="PatroniConfig"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(DynamicConfigProvider(), name,
                         {**props, "provider_version": PROVIDER_VERSION}, opts)


# HAProxy ----------------------------------------------------------------------------

def _proxy(props: dict[str, Any]) -> HaProxy:
    return HaProxy(Path(props["config_file"]), Path(props["stats_socket"]), props["host"],
                   int(props["port"]))


class ProxyProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        proxy = _proxy(props)
        proxy.write_config(props["haproxy_cfg"])
        proxy.check_config()
        proxy.start()
        proxy.wait_checked()
        return CreateResult(id_=props["config_file"], outs={**props, "running": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs={**props, "running": _proxy(props).daemon.is_running()})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("running") is False
                          or _changed(olds, news, ("running",)), replaces=[],
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        proxy = _proxy(news)
        proxy.write_config(news["haproxy_cfg"])
        proxy.check_config()
        _proxy(olds).stop()  # HAProxy reloads by re-exec; a short restart is simpler here
        proxy.start()
        proxy.wait_checked()
        return UpdateResult(outs={**news, "running": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _proxy(props).stop()


class Proxy(Resource, module="local", name="HaProxy"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(ProxyProvider(), name, {**props, "running": None,
                                                 "provider_version": PROVIDER_VERSION}, opts)
