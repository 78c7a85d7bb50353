"""Where the local stack's HA pieces live and which loopback addresses they use.

With `ha.manager: patroni` the local backend runs one Patroni node per member on
127.0.0.(2+i) (i = 0 .. replicas), three etcd members on 127.0.0.2-4 (beside the
first nodes, as on hosts that carry both), HAProxy and PgBouncer on the
configured listen address. Patroni refuses 127.0.0.1 as an address other
members dial, which is why nodes start at .2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra import render
from infra.backends.local_layout import layout
from infra.config import PlatformConfig
from infra.config.ha import ETCD_MEMBERS
from infra.render import patroni as render_ha

ETCD_HOSTS = tuple(f"127.0.0.{2 + i}" for i in range(ETCD_MEMBERS))


@dataclass(frozen=True)
class HaLayout:
    base: Path

    @property
    def patroni_dir(self) -> Path:
        """Each node's patroni.yml and the pgpass Patroni writes (passwords inside), with
        its pid and log: all 0600, the service user's, in the stack's `secrets` folder
        beside the hand-supervised path's passfiles (local_layout.Layout.secrets)."""
        return self.base / "secrets"

    @property
    def etcd_dir(self) -> Path:
        return self.base / "etcd"

    @property
    def haproxy_dir(self) -> Path:
        return self.base / "haproxy"

    def config_file(self, node: str) -> Path:
        return self.patroni_dir / f"{node}.yml"


def ha_layout(cfg: PlatformConfig) -> HaLayout:
    return HaLayout(layout(cfg).base)


def nodes(cfg: PlatformConfig) -> list[render_ha.PatroniNode]:
    lay = layout(cfg)
    out = []
    for i in range(cfg.replicas + 1):
        name = f"pg-{i + 1}"
        data = str(lay.base / name)
        out.append(render_ha.PatroniNode(
            name=name, host=f"127.0.0.{2 + i}", port=cfg.postgres.port,
            restapi_port=cfg.ha.restapi_port,
            paths=render.HostPaths(data_dir=data, socket_dir=str(lay.base / f"run-{name}"),
                                   pgbackrest_config=str(lay.pgbackrest_conf)),
            pgpass=str(ha_layout(cfg).patroni_dir / f"{name}.pgpass"), config_dir=data))
    return out


def etcd(cfg: PlatformConfig) -> list[render_ha.EtcdMember]:
    return render_ha.etcd_members(ETCD_HOSTS, cfg.ha.etcd_client_port, cfg.ha.etcd_peer_port)


def tls_hosts(cfg: PlatformConfig) -> list[str]:
    """Every address a client, peer or health check dials, for the server certificate."""
    hosts = [cfg.postgres.listen_address, *(n.host for n in nodes(cfg)), *ETCD_HOSTS,
             "localhost"]
    return list(dict.fromkeys(hosts))
