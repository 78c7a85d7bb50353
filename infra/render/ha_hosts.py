"""The HA files of a dev or prod database host, from the renderers the local stack uses.

With `ha.manager: patroni` every database host of dev (containers) and prod (EC2)
gets a patroni.yml (secret: passwords inside) and the first three get an etcd
member's config (plain). Both texts come from `patroni_yml` and `etcd_conf` in
infra/render/patroni.py, the very functions the local backend calls, so the
dynamic configuration (every PostgreSQL parameter, Patroni's timing, synchronous
mode, slots, pg_rewind), the pg_hba rules and etcd's settings are the same on
every stack; only addresses and paths are the host's.

etcd runs beside PostgreSQL on the first three database hosts: a lost host takes
one etcd member and one PostgreSQL node, and the other two keep quorum (docs/ha.md).
Fewer than three database hosts cannot hold a quorum that survives a loss, so
they are refused here, naming the key.

TLS files are the host's own certificate and key (`<conf_dir>/tls/` unless the layout
names others), which dev and prod issue per host (infra/cloud_tls.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infra.config import PlatformConfig
from infra.config.ha import ETCD_MEMBERS
from infra.errors import ConfigError
from infra.render.patroni import (
    EtcdMember,
    HaSecrets,
    PatroniNode,
    etcd_conf,
    patroni_yml,
)
from infra.render.postgres import HostPaths, TlsFiles

SERVICE_USER = "postgres"  # runs PostgreSQL, Patroni and etcd on dev and prod


@dataclass(frozen=True)
class HostLayout:
    """Where a backend's hosts keep things; the same on each of its hosts."""

    conf_dir: str
    data_dir: str
    socket_dir: str
    pgbackrest_config: str | None
    bin_dir: str
    etcd_data_dir: str
    hba_networks: tuple[str, ...]
    listen_host: str = "0.0.0.0"  # PostgreSQL, the REST API and etcd bind every address
    # The server's TLS files when not the default <conf_dir>/tls/ ones (dev's key is a copy).
    tls_files: TlsFiles | None = None

    @property
    def patroni_yml(self) -> str:
        return f"{self.conf_dir}/patroni.yml"

    @property
    def etcd_conf(self) -> str:
        return f"{self.conf_dir}/etcd.conf"

    @property
    def tls(self) -> TlsFiles:
        if self.tls_files is not None:
            return self.tls_files
        return TlsFiles(cert_file=f"{self.conf_dir}/tls/server.crt",
                        key_file=f"{self.conf_dir}/tls/server.key",
                        ca_file=f"{self.conf_dir}/tls/ca.crt")


def node_name(index: int) -> str:
    """Host `index` (0 first) as a Patroni member; the leader moves, so no role in it."""
    return f"pg-{index + 1}"


def nodes(cfg: PlatformConfig, addresses: Sequence[str], lay: HostLayout) -> list[PatroniNode]:
    return [PatroniNode(
        name=node_name(i), host=address, port=cfg.postgres.port,
        restapi_port=cfg.ha.restapi_port,
        paths=HostPaths(data_dir=lay.data_dir, socket_dir=lay.socket_dir,
                        pgbackrest_config=lay.pgbackrest_config),
        pgpass=f"{lay.conf_dir}/secret/patroni.pgpass", config_dir=lay.data_dir,
        listen_host=lay.listen_host) for i, address in enumerate(addresses)]


def etcd_members(cfg: PlatformConfig, addresses: Sequence[str], lay: HostLayout,
                 etcd_hosts: Sequence[str] = ()) -> list[EtcdMember]:
    """etcd on the first three database hosts, or on `etcd_hosts` of its own (dev's etcd
    containers); either way a cluster needs three database hosts (the caller's check)."""
    if len(addresses) < ETCD_MEMBERS:
        raise ConfigError(
            f"pg-platform:replicas={cfg.replicas}: pg-platform:ha.manager='patroni' on the "
            f"{cfg.backend} backend runs etcd on {ETCD_MEMBERS} database hosts, so it needs "
            f"replicas >= {ETCD_MEMBERS - 1}; raise replicas or keep ha.manager 'none'")
    return [EtcdMember(f"etcd-{i}", address, cfg.ha.etcd_client_port, cfg.ha.etcd_peer_port,
                       listen_host=lay.listen_host)
            for i, address in enumerate((etcd_hosts or addresses)[:ETCD_MEMBERS], start=1)]


def plain_files(cfg: PlatformConfig, index: int, addresses: Sequence[str],
                lay: HostLayout) -> dict[str, str]:
    """Host `index`'s non-secret HA files: etcd's config on the first three hosts."""
    members = etcd_members(cfg, addresses, lay)
    if index >= len(members):
        return {}
    return {lay.etcd_conf: etcd_conf(cfg, members[index], members, lay.etcd_data_dir, lay.tls)}


def secret_files(cfg: PlatformConfig, index: int, addresses: Sequence[str], lay: HostLayout,
                 secrets: HaSecrets, etcd_hosts: Sequence[str] = ()) -> dict[str, str]:
    """Host `index`'s patroni.yml (passwords inside: deliver it as a secret, 0600)."""
    node = nodes(cfg, addresses, lay)[index]
    return {lay.patroni_yml: patroni_yml(
        cfg, node, etcd_members(cfg, addresses, lay, etcd_hosts), secrets, timescaledb=True,
        tls=lay.tls, hba_networks=lay.hba_networks, ident_users=(SERVICE_USER,),
        bin_dir=lay.bin_dir)}
