"""The integration suite's `cluster` on the Patroni path (`pytest --ha-manager=patroni`).

Built by calling the local backend's Patroni providers with the very inputs `pulumi up`
gives them (infra.backends.local_patroni.*_props): etcd x3, a Patroni leader and a
replica, the dead-leader fence, their dynamic configuration, HAProxy, the bootstrap
step, pgBackRest and PgBouncer. HAProxy's read-write port is the stack's
`postgres.port` on the listen address, so every DSN the `Cluster` helpers build
(listen address, postgres.port) reaches whichever node leads, as clients of a Patroni stack do.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

from infra import config, render
from infra.backends import local, local_patroni
from infra.backends.local_backup import BackupProvider
from infra.backends.local_fence import FenceProvider
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
from infra.render import patroni as render_ha
from tests import ha_support, ports
from tests.support import scratch_dir


def patroni_pooler_props(cfg: config.PlatformConfig, userlist: Any,
                         tls: render.TlsFiles | None) -> dict[str, Any]:
    assert tls is not None
    return local_patroni.pooler_props(cfg, userlist, tls)


@contextlib.contextmanager
def patroni_cluster(cluster_cls: Any, timescaledb: bool, max_connections: int,
                    pool_size: int) -> Iterator[Any]:
    """Yield a `cluster_cls` (tests.integration.conftest.Cluster) whose nodes Patroni runs."""
    base = scratch_dir("pgp-hacluster-")
    p = ports.ha_ports(ETCD_HOSTS)
    port, cport, pport, rport, bport = p.postgres, p.etcd_client, p.etcd_peer, p.restapi, p.pooler
    settings: dict[str, Any] = {
        "state_dir": str(base), "replicas": 1,
        "postgres": {"port": port, "max_connections": max_connections},
        "pooler": {"port": bport, "default_pool_size": pool_size, "max_client_conn": 1000,
                   "server_login_retry": 0.25},
        "ha": {"manager": "patroni", "etcd_client_port": cport, "etcd_peer_port": pport,
               "restapi_port": rport, "haproxy_port": port},
    }
    cfg = config.load(settings, "test")
    pw = {k: secrets.token_urlsafe(24) for k in ("superuser", "owner", "app", "replication",
                                                 "admin", "monitor", "tenant_admin", "rest",
                                                 "pooler_auth")}
    pw["tenant_key"] = secrets.token_urlsafe(32)
    tls = ha_support.write_tls(base, tuple(h for h in tls_hosts(cfg) if h != "localhost"))
    assert tls == layout(cfg).tls
    c = cluster_cls(base=base, cfg=cfg, settings=settings, passwords=pw, tls=tls,
                timescaledb=timescaledb, pooler_props=patroni_pooler_props)
    made: list[tuple[Any, dict[str, Any]]] = []

    def create(key: str, provider: Any, props: dict[str, Any]) -> None:
        c.outs[key] = dict(provider.create(props).outs or {})
        made.append((provider, c.outs[key]))

    try:
        create("etcd", EtcdProvider(), local_patroni.etcd_props(cfg, tls))
        sec = render_ha.HaSecrets(pw["superuser"], pw["replication"], pw["rest"])
        members = [local_patroni.member_props(cfg, n, sec, tls, timescaledb)
                   for n in nodes(cfg)]
        for props in members:
            create(props["name"], MemberProvider(), props)
        create("fence", FenceProvider(), local_patroni.fence_props(cfg, members, tls))
        create("config", DynamicConfigProvider(),
               local_patroni.dynamic_config_props(cfg, members, tls, timescaledb))
        create("haproxy", ProxyProvider(), local_patroni.proxy_props(cfg, tls))
        create("database", DatabaseProvider(), {
            **local.database_props(cfg, pw["superuser"], pw["app"], pw["replication"],
                                   owner_pw=pw["owner"], monitor_pw=pw["monitor"],
                                   tenant_admin_pw=pw["tenant_admin"],
                                   pooler_auth_pw=pw["pooler_auth"]),
            "port": port, "data_dir": members[0]["data_dir"]})
        create("backup", BackupProvider(), local_patroni.backup_props(cfg))
        create("pooler", PoolerProvider(), local_patroni.pooler_props(cfg, c.userlist(), tls))
        yield c
    finally:
        for provider, outs in reversed(made):
            with contextlib.suppress(Exception):  # keep tearing down the rest
                provider.delete("", outs)
        shutil.rmtree(base, ignore_errors=True)
