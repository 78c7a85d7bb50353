"""The local backend's Patroni path: its dynamic providers, called with the very
inputs `pulumi up` gives them (infra.backends.local_patroni.*_props), on free
loopback ports. Real etcd, Patroni, HAProxy, PgBouncer and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra import config, roles
from infra.backends import local, local_patroni, tenant_users
from infra.backends.local_backup import BackupProvider
from infra.backends.local_ha import (
    DynamicConfigProvider,
    EtcdProvider,
    MemberProvider,
    ProxyProvider,
)
from infra.backends.local_ha_layout import ETCD_HOSTS, nodes, tls_hosts
from infra.backends.local_layout import layout
from infra.backends.local_pooler import PoolerProvider
from infra.backends.local_postgres import DatabaseProvider
from infra.hostctl.foreground import wait_for
from infra.ops.cluster import writable
from infra.render import patroni as render_ha
from tests import ha_support
from tests import ports as test_ports
from tests.support import scratch_dir

pytestmark = pytest.mark.ha


class Stack:
    def __init__(self) -> None:
        self.base = scratch_dir("pgp-halocal-")
        ports = list(test_ports.ha_ports(ETCD_HOSTS))
        self.settings: dict[str, Any] = {
            "state_dir": str(self.base), "replicas": 1,
            "postgres": {"port": ports[0], "max_connections": 40},
            "pooler": {"port": ports[5], "default_pool_size": 5, "max_client_conn": 100,
                       "server_login_retry": 0.25},
            "ha": {"manager": "patroni", "etcd_client_port": ports[1],
                   "etcd_peer_port": ports[2], "restapi_port": ports[3],
                   "haproxy_port": ports[4]},
        }
        self.cfg = config.load(self.settings, "halocal")
        self.pw = {k: secrets.token_urlsafe(24) for k in (
            "super", "owner", "app", "repl", "admin", "rest", "monitor", "tadmin", "tkey",
            "pooler_auth")}
        self.tls = ha_support.write_tls(self.base, tuple(h for h in tls_hosts(self.cfg)
                                                          if h != "localhost"))
        assert self.tls == layout(self.cfg).tls
        self.made: list[tuple[Any, dict[str, Any]]] = []
        self.outs: dict[str, dict[str, Any]] = {}

    def member_props(self, cfg: config.PlatformConfig) -> list[dict[str, Any]]:
        sec = render_ha.HaSecrets(self.pw["super"], self.pw["repl"], self.pw["rest"])
        return [local_patroni.member_props(cfg, n, sec, self.tls, False) for n in nodes(cfg)]

    def create(self, key: str, provider: Any, props: dict[str, Any]) -> dict[str, Any]:
        outs = dict(provider.create(props).outs or {})
        self.made.append((provider, outs))
        self.outs[key] = outs
        return outs

    def pooler_dsn(self) -> str:
        pg = self.cfg.postgres
        return (f"postgresql://{pg.app_role}:{self.pw['app']}@{pg.listen_address}:"
                f"{self.cfg.pooler.port}/{pg.database}?sslmode=verify-full"
                f"&sslrootcert={self.tls.ca_file}")

    def owner_dsn(self, host: str, port: int, db: str | None = None) -> str:
        """The owner, in the platform database (`postgres` is revoked from it)."""
        return (f"postgresql://{self.cfg.postgres.owner_role}:{self.pw['owner']}@{host}:"
                f"{port}/{db or self.cfg.postgres.database}?sslmode=verify-full"
                f"&sslrootcert={self.tls.ca_file}")

    def super_dsn(self, host: str, port: int, db: str = "postgres") -> str:
        """Break-glass over TLS (what Patroni itself logs in as)."""
        return (f"postgresql://{roles.BREAK_GLASS}:{self.pw['super']}@{host}:"
                f"{port}/{db}?sslmode=verify-full&sslrootcert={self.tls.ca_file}")

    def userlist(self) -> str:
        """The auth file as the local backend renders it (tenants come by auth_query)."""
        return tenant_users.auth_file(self.cfg, self.pw["app"], self.pw["admin"],
                                      self.pw["tadmin"], self.pw["pooler_auth"])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    cfg, tls = s.cfg, s.tls
    try:
        s.create("etcd", EtcdProvider(), local_patroni.etcd_props(cfg, tls))
        members = s.member_props(cfg)
        for props in members:
            s.create(props["name"], MemberProvider(), props)
        s.create("config", DynamicConfigProvider(),
                 local_patroni.dynamic_config_props(cfg, members, tls, False))
        s.create("haproxy", ProxyProvider(), local_patroni.proxy_props(cfg, tls))
        s.create("database", DatabaseProvider(), {
            **local.database_props(cfg, s.pw["super"], s.pw["app"], s.pw["repl"],
                                   owner_pw=s.pw["owner"], monitor_pw=s.pw["monitor"],
                                   tenant_admin_pw=s.pw["tadmin"],
                                   pooler_auth_pw=s.pw["pooler_auth"]),
            "port": cfg.ha.haproxy_port, "data_dir": members[0]["data_dir"]})
        s.create("backup", BackupProvider(), local_patroni.backup_props(cfg))
        s.create("pooler", PoolerProvider(), local_patroni.pooler_props(cfg, s.userlist(), tls))
        yield s
    finally:
        for provider, outs in reversed(s.made):
            with contextlib.suppress(Exception):
                provider.delete("", outs)
        shutil.rmtree(s.base, ignore_errors=True)


def test_writes_through_the_pooler_reach_the_leader(stack: Stack) -> None:
    with psycopg.connect(stack.pooler_dsn(), prepare_threshold=None, autocommit=True) as c:
        row = c.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())").fetchone()
    assert row is not None and row[0] is False and row[1] == "127.0.0.2"


def test_pgbackrest_archives_from_whichever_node_leads(stack: Stack) -> None:
    from infra.hostctl.patroni import from_config
    from infra.hostctl.pgbackrest import PgBackRest

    props = stack.outs["backup"]
    # Peer on each node's socket as break-glass: no password anywhere.
    pgbr = PgBackRest(config=Path(props["config_path"]), stanza=props["stanza"])
    pgbr.check()  # a WAL switch on the leader, archived through its own archive_command
    first = from_config(Path(stack.outs["pg-1"]["config_file"]))
    status, body = first.post("/switchover", {"leader": "pg-1", "candidate": "pg-2"})
    assert status == 200, body
    # Patroni answers once the store names pg-2; its promotion can lag by milliseconds.
    wait_for(lambda: writable(stack.owner_dsn("127.0.0.3", stack.cfg.postgres.port)),
             timeout=30, what="pg-2 accepts writes")
    pgbr.check()  # the same stanza, now archived from pg-2
    pgbr.backup("incr")
    status, body = first.post("/switchover", {"leader": "pg-2", "candidate": "pg-1"})
    assert status == 200, body
    for name in ("pg-1", "pg-2"):
        local_patroni_member(stack.outs[name]).wait_running(timeout=120)


def test_refresh_sees_a_member_down_and_up_brings_it_back(stack: Stack) -> None:
    provider = MemberProvider()
    props = stack.outs["pg-2"]
    assert _state(provider, props) == "running"
    proc = local_patroni_member(props)
    pid, postmaster = proc.daemon.pid(), proc.postmaster_pid()
    assert pid and postmaster
    os.kill(pid, signal.SIGKILL)
    os.kill(postmaster, signal.SIGKILL)
    wait_for(lambda: _state(provider, props) == "stopped", timeout=10,
               what="refresh sees pg-2 down")
    refreshed = dict(provider.read("", props).outs or {})
    assert provider.diff("", refreshed, props).changes is True
    provider.update("", refreshed, props)
    assert _state(provider, props) == "running"
    lead = stack.super_dsn("127.0.0.2", stack.cfg.postgres.port)
    with psycopg.connect(lead) as conn:
        wait_for(lambda: conn.execute(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = 'pg-2' "
            "AND state = 'streaming'").fetchone() is not None, timeout=60,
            what="pg-2 streams again")


def _state(provider: MemberProvider, props: dict[str, Any]) -> str:
    return str((provider.read("", props).outs or {})["state"])


def local_patroni_member(props: dict[str, Any]) -> Any:
    from infra.backends.local_ha import _member

    return _member(props)


def test_a_max_connections_change_goes_through_dynamic_config(stack: Stack) -> None:
    cfg = config.load({**stack.settings,
                       "postgres": {**stack.settings["postgres"], "max_connections": 55}},
                      "halocal")
    olds = stack.outs["config"]
    news = local_patroni.dynamic_config_props(cfg, stack.member_props(cfg), stack.tls, False)
    assert DynamicConfigProvider().diff("", olds, news).changes is True
    DynamicConfigProvider().update("", olds, news)
    stack.outs["config"] = news
    for host in ("127.0.0.2", "127.0.0.3"):
        with psycopg.connect(stack.owner_dsn(host, cfg.postgres.port)) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("55",)
            assert conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart"
                                ).fetchone() == (0,)


def test_removing_a_replica_removes_its_member_data_and_slot(stack: Stack) -> None:
    props = stack.outs["pg-2"]
    MemberProvider().delete("", props)
    stack.made = [(p, o) for p, o in stack.made if o is not props]
    assert not Path(props["data_dir"]).exists()
    assert not Path(props["config_file"]).exists()
    with psycopg.connect(stack.super_dsn("127.0.0.2", stack.cfg.postgres.port)) as conn:
        wait_for(lambda: conn.execute("SELECT 1 FROM pg_replication_slots WHERE "
                                        "slot_name = 'pg_2'").fetchone() is None,
                   timeout=60, what="the leader drops pg-2's slot")
