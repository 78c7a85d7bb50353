"""patroni.yml and etcd's config file, from the same settings as postgresql.conf.

Pure: settings and paths in, file texts out, shared by every backend.

Parameters come from the very postgresql.conf text `postgresql_conf`
makes, parsed back into name/value pairs, so a Patroni node and a
hand-supervised node can never disagree about a setting. They are split:
cluster-wide settings go to Patroni's dynamic configuration (bootstrap.dcs),
so restart order and `pending_restart` are Patroni's job; per-node settings
(addresses, sockets, the archive command naming the node's own data directory)
stay in the node's local section. Passwords are in the file, so it is written
0600 and read by Patroni itself; nothing reaches a process environment.

etcd is reached through its v3 API (Patroni's `etcd3:` section): etcd 3.4
serves v2 only with --enable-v2, v2 is deprecated and removed in etcd 3.6, and
v3 leases expire the leader key atomically.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from infra.config import PlatformConfig
from infra.errors import RenderError
from infra.render.postgres import (
    HostPaths,
    TlsFiles,
    pg_hba_conf,
    pg_ident_conf,
    postgresql_conf,
)
from infra.render.template import render
from infra.roles import BREAK_GLASS

HEADER = ("# Rendered by pg-platform (infra/render/patroni.py). Do not edit: `pulumi up` "
          "overwrites it.\n")
# Settings Patroni sets itself from its own sections, or that differ per node.
_PATRONI_OWNS = frozenset({"port", "listen_addresses", "hba_file", "primary_conninfo",
                           "primary_slot_name", "hot_standby"})
_NODE_LOCAL = frozenset({"unix_socket_directories", "archive_command"})
NAMESPACE = "/pg-platform/"


@dataclass(frozen=True)
class EtcdMember:
    """`host` is what the others dial; `listen_host` what etcd binds (an IP: etcd binds
    no names), the same unless a container or host listens on every address."""

    name: str
    host: str
    client_port: int
    peer_port: int
    listen_host: str | None = None

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"

    def listen_url(self, port: int) -> str:
        return f"https://{self.listen_host or self.host}:{port}"


@dataclass(frozen=True)
class PatroniNode:
    """One PostgreSQL node as Patroni sees it: `host` is the address the others dial,
    `listen_host` what PostgreSQL and the REST API bind (default: `host`)."""

    name: str
    host: str
    port: int
    restapi_port: int
    paths: HostPaths
    pgpass: str
    config_dir: str  # where postgresql.conf and pg_hba.conf Patroni writes live (data dir)
    listen_host: str | None = None

    @property
    def listen(self) -> str:
        return self.listen_host or self.host


# Listen addresses for which Patroni dials its own node at `localhost` (Patroni 3.0's
# postgresql/config.py, _get_tcp_local_address; loopback names count too).
WILDCARDS = frozenset({"*", "0.0.0.0", "127.0.0.1", "localhost"})


@dataclass(frozen=True)
class HaSecrets:
    """`superuser` is the break-glass role's (roles.BREAK_GLASS): Patroni's superuser and
    pg_rewind user. The owner role is not a superuser and never appears here."""

    superuser: str
    replication: str
    restapi: str


def parse_conf(text: str) -> dict[str, str]:
    """postgresql.conf text back into name -> value, quotes removed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise RenderError(f"postgresql.conf line {raw!r} has no '='")
        value = value.strip()
        if value.startswith("'"):
            if not value.endswith("'") or len(value) < 2:
                raise RenderError(f"postgresql.conf line {raw!r}: unterminated quote")
            value = value[1:-1].replace("''", "'")
        out[name.strip()] = value
    return out


def pg_hba_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def etcd_members(hosts: Sequence[str], client_port: int, peer_port: int) -> list[EtcdMember]:
    return [EtcdMember(f"etcd-{i}", h, client_port, peer_port)
            for i, h in enumerate(hosts, start=1)]


def etcd_conf(cfg: PlatformConfig, member: EtcdMember, members: Sequence[EtcdMember],
              data_dir: str, tls: TlsFiles) -> str:
    """etcd's --config-file: TLS for clients and peers, each side proving its certificate."""
    def sec() -> dict[str, Any]:
        return {"cert-file": tls.cert_file, "key-file": tls.key_file,
                "trusted-ca-file": tls.ca_file, "client-cert-auth": True}

    doc: dict[str, Any] = {
        "name": member.name,
        "data-dir": data_dir,
        "listen-client-urls": member.listen_url(member.client_port),
        "advertise-client-urls": member.client_url,
        "listen-peer-urls": member.listen_url(member.peer_port),
        "initial-advertise-peer-urls": member.peer_url,
        "initial-cluster": ",".join(f"{m.name}={m.peer_url}" for m in members),
        "initial-cluster-token": f"pg-platform-{cfg.stack}",
        "initial-cluster-state": "new",
        "enable-v2": False,
        # A --config-file turns the gRPC gateway off by default; Patroni's etcd3 client
        # speaks JSON to it at /v3.
        "enable-grpc-gateway": True,
        "client-transport-security": sec(),
        "peer-transport-security": sec(),
        # Loopback and LAN round trips are sub-millisecond; etcd's defaults (100/1000 ms).
        "heartbeat-interval": 100,
        "election-timeout": 1000,
        "logger": "zap",
        "log-outputs": ["stderr"],
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": "1h",
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=True)


def _split_parameters(conf: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    dynamic = {k: v for k, v in conf.items() if k not in _PATRONI_OWNS | _NODE_LOCAL}
    local = {k: v for k, v in conf.items() if k in _NODE_LOCAL}
    return dynamic, local


def create_replica_methods(cfg: PlatformConfig, node: PatroniNode) -> dict[str, Any]:
    """pgBackRest restore first (no load on the leader), pg_basebackup when it fails."""
    out: dict[str, Any] = {"basebackup": [{"checkpoint": "fast"}]}
    methods = ["basebackup"]
    if node.paths.pgbackrest_config:
        cmd = (f"pgbackrest --config={shlex.quote(node.paths.pgbackrest_config)} "
               f"--stanza={cfg.backup.stanza} --pg1-path={shlex.quote(node.paths.data_dir)} "
               "--delta --type=standby restore")
        out["pgbackrest"] = {"command": cmd, "keep_data": True, "no_params": True}
        methods = ["pgbackrest", "basebackup"]
    out["create_replica_methods"] = methods
    return out


def bootstrap_stanza(cfg: PlatformConfig, pgbackrest_config: str) -> str:
    """Patroni's `bootstrap.post_init`: `pgbackrest stanza-create` on the new cluster.

    Patroni starts the bootstrapped PostgreSQL with archive_mode on, and the first WAL
    switch (a replica's pg_basebackup, the first backup) comes soon after; run by a later
    step, stanza-create raced that archiver, whose archive-push then failed ("stanza
    does not exist") until it did. post_init runs once the new cluster accepts
    connections and before Patroni takes the leader key, so before any clone or switch.
    A failure fails the bootstrap (Patroni removes the data directory and the node tries
    again), as archiving would fail too. Patroni appends a connection string (no
    password: it writes a pgpass) as the last argument, which pgbackrest would refuse,
    hence the shell: it becomes `$0`. pgBackRest reaches the node by peer on its socket.
    """
    push = (f"exec pgbackrest --config={shlex.quote(pgbackrest_config)} "
            f"--stanza={shlex.quote(cfg.backup.stanza)} stanza-create")
    return f"/bin/sh -c {shlex.quote(push)}"


def patroni_yml(cfg: PlatformConfig, node: PatroniNode, etcd: Sequence[EtcdMember],
                secrets: HaSecrets, *, timescaledb: bool, tls: TlsFiles,
                hba_networks: tuple[str, ...] = ("127.0.0.1/32",),
                ident_users: tuple[str, ...] = ("postgres",),
                bin_dir: str = "/usr/lib/postgresql/15/bin",
                stanza_at_bootstrap: bool = False) -> str:
    """A node's patroni.yml; secrets inside, so the caller writes it 0600.

    `stanza_at_bootstrap`: the bootstrap's post_init creates the pgBackRest stanza
    (bootstrap_stanza), so the first archive_command never finds it missing.

    Patroni logs in as the break-glass superuser over hostssl with its password (its own
    connections, pg_rewind against the new leader); `ident_users` are the OS users the
    socket's peer map admits as that role (the service user, and root where the deploy
    runs as root), exactly as on a hand-supervised node.
    """
    pg, ha = cfg.postgres, cfg.ha
    conf = parse_conf(postgresql_conf(cfg, node.paths, timescaledb=timescaledb,
                                             port=node.port, listen=node.listen, tls=tls))
    dynamic, local = _split_parameters(conf)
    if node.paths.pgbackrest_config:
        local["archive_command"] = (
            f"pgbackrest --config={shlex.quote(node.paths.pgbackrest_config)} "
            f"--stanza={cfg.backup.stanza} --pg1-path={shlex.quote(node.paths.data_dir)} "
            "archive-push %p")
    hba = pg_hba_lines(pg_hba_conf(cfg, hba_networks))
    # Patroni checks its own node over the replication protocol (a replica's timeline and
    # LSN, before it decides whether to pg_rewind after a failover). On a node listening on
    # every address (dev, prod) it dials `localhost`, which no certificate names, so
    # verify-full refuses it ("Can not fetch local timeline and lsn from replication
    # connection", seen in the host tier) and a diverged replica is never rewound. There,
    # the check goes over the socket instead, with the replication role's password.
    socket_repl = node.listen in WILDCARDS
    if socket_repl:
        hba.append(f"local replication {pg.replication_role} scram-sha-256")
    ssl = {"sslmode": "verify-full", "sslrootcert": tls.ca_file}
    restore = ""
    if node.paths.pgbackrest_config:
        restore = (f"pgbackrest --config={shlex.quote(node.paths.pgbackrest_config)} "
                   f"--stanza={cfg.backup.stanza} --pg1-path={shlex.quote(node.paths.data_dir)} "
                   "archive-get %f %p")
    postgresql: dict[str, Any] = {
        "listen": f"{node.listen}:{node.port}",
        "connect_address": f"{node.host}:{node.port}",
        "data_dir": node.paths.data_dir,
        "bin_dir": bin_dir,
        "pgpass": node.pgpass,
        "authentication": {
            "superuser": {"username": BREAK_GLASS, "password": secrets.superuser, **ssl},
            "replication": {"username": pg.replication_role, "password": secrets.replication,
                            **ssl},
            "rewind": {"username": BREAK_GLASS, "password": secrets.superuser, **ssl},
        },
        "parameters": local,
        "pg_hba": hba,
        # The break-glass `local ... peer map=breakglass` line needs its map (infra/roles).
        "pg_ident": pg_hba_lines(pg_ident_conf(*ident_users)),
        # Patroni's own superuser session goes over the socket (peer, break-glass map), so
        # no superuser session is ever on the network but pg_rewind's to a new leader.
        "use_unix_socket": True,
        "use_unix_socket_repl": socket_repl,
        **create_replica_methods(cfg, node),
    }
    if restore:
        postgresql["recovery_conf"] = {"restore_command": restore}
    doc: dict[str, Any] = {
        "scope": f"pg-platform-{cfg.stack}",
        "namespace": NAMESPACE,
        "name": node.name,
        "restapi": {
            "listen": f"{node.listen}:{node.restapi_port}",
            "connect_address": f"{node.host}:{node.restapi_port}",
            "certfile": tls.cert_file, "keyfile": tls.key_file,
            "authentication": {"username": "patroni", "password": secrets.restapi},
        },
        "ctl": {"cacert": tls.ca_file, "certfile": tls.cert_file, "keyfile": tls.key_file},
        "etcd3": {"hosts": [f"{m.host}:{m.client_port}" for m in etcd], "protocol": "https",
                  "cacert": tls.ca_file, "cert": tls.cert_file, "key": tls.key_file},
        "bootstrap": {
            "dcs": {
                "ttl": ha.ttl, "loop_wait": ha.loop_wait, "retry_timeout": ha.retry_timeout,
                "maximum_lag_on_failover": ha.maximum_lag_on_failover,
                "synchronous_mode": ha.synchronous_mode,
                "synchronous_mode_strict": ha.synchronous_mode_strict,
                "postgresql": {"use_pg_rewind": True, "use_slots": True,
                               "parameters": dynamic},
            },
            "pg_hba": hba,
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums",
                       {"auth": "scram-sha-256"}],
            **({"post_init": bootstrap_stanza(cfg, node.paths.pgbackrest_config)}
               if stanza_at_bootstrap and node.paths.pgbackrest_config else {}),
        },
        "postgresql": postgresql,
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False,
                 "nosync": False},
        "log": {"level": "INFO"},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=True)


def dynamic_config(cfg: PlatformConfig, node: PatroniNode, *, timescaledb: bool,
                   tls: TlsFiles) -> dict[str, Any]:
    """What `patronictl edit-config` should hold: the bootstrap.dcs of a rendered file."""
    doc = yaml.safe_load(patroni_yml(cfg, node, [], HaSecrets("x", "x", "x"),
                                     timescaledb=timescaledb, tls=tls))
    dcs: dict[str, Any] = doc["bootstrap"]["dcs"]
    return dcs


@dataclass(frozen=True)
class ProxyTargets:
    """Where HAProxy listens (read-write on `port`, read-only on `port + 1`)."""

    listen_address: str
    port: int
    stats_socket: str


def haproxy_cfg(nodes: Sequence[PatroniNode], targets: ProxyTargets,
                tls: TlsFiles) -> str:
    """HAProxy in TCP mode: each listener sends clients to the nodes Patroni's REST API
    reports for that role (GET /primary, /replica: 200 or 503). TLS to PostgreSQL stays
    end to end; the health checks verify Patroni's certificate against the platform CA.
    A node marked down has its sessions cut, so PgBouncer reconnects to the new leader
    instead of writing into a demoted node."""
    for value in (targets.listen_address, targets.stats_socket, tls.ca_file,
                  *(n.host for n in nodes)):
        if any(c.isspace() or c in "#'\"\\" for c in value):
            raise RenderError(f"haproxy.cfg: {value!r} contains a space, quote, '#' or '\\'")
    return render("haproxy.cfg.j2", nodes=nodes, targets=targets, tls=tls)
