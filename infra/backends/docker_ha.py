"""Dev with `ha.manager: patroni`: the files and addresses of the Patroni, etcd and HAProxy
containers (infra/backends/docker_patroni.py makes the containers).

Three etcd containers of their own (not beside PostgreSQL as on prod: a container runs
one program), each database container runs Patroni as its main process, and one HAProxy
container routes to the leader and the replicas by Patroni's REST API (/primary,
/replica), as on the local stack; PgBouncer dials HAProxy, so `pooler_dsn` follows the
leader. Every container of the HA set has a fixed address on the stack's network (the
lower half of `docker.network_subnet`; Docker hands out the upper half), so etcd's
member list and HAProxy's servers never go stale when a container is re-created.

patroni.yml holds the break-glass password, the only place dev keeps it: Patroni's
pg_rewind reaches the new leader over the network as break-glass, so peer on the
socket is not enough. It is delivered in the container's secret bundle, never on a
volume or in an upload. The texts come from infra/render/ha_hosts.py and
infra/render/patroni.py, as on prod and locally.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pulumi

from infra.backends.host_bundle import PATRONI_UNIT
from infra.config import DockerSettings, PlatformConfig
from infra.config.ha import ETCD_MEMBERS
from infra.errors import ConfigError
from infra.passwords import Password
from infra.render import TlsFiles, ha_hosts
from infra.render.patroni import EtcdMember, HaSecrets, ProxyTargets, etcd_conf, haproxy_cfg
from infra.roles import BREAK_GLASS

PRIMARY_HOST = "primary"   # the containers' network aliases, as infra/backends/docker.py names them
HAPROXY_HOST = "haproxy"
# In the etcd container: its config directory (read-only bind mount) and data volume.
ETCD_CONF_DIR = "/etc/pg-platform"
ETCD_CONF = f"{ETCD_CONF_DIR}/etcd.conf"
ETCD_TLS = TlsFiles(cert_file=f"{ETCD_CONF_DIR}/tls/server.crt",
                    key_file=f"{ETCD_CONF_DIR}/tls/server.key",
                    ca_file=f"{ETCD_CONF_DIR}/tls/ca.crt")
ETCD_DATA = "/var/lib/etcd"
# In the HAProxy container (the official image: user haproxy, config under /usr/local/etc).
HAPROXY_CFG = "/usr/local/etc/haproxy/haproxy.cfg"
HAPROXY_CA = "/usr/local/etc/haproxy/ca.crt"
HAPROXY_SOCKET = "/var/lib/haproxy/admin.sock"
# Fixed addresses: offsets into the network (etcd-1..3, Patroni nodes, HAProxy).
ETCD_OFFSET, NODE_OFFSET, HAPROXY_OFFSET = 10, 20, 30
MIN_ADDRESSES = 64   # offsets up to 30 in the lower half


def enabled(cfg: PlatformConfig) -> bool:
    return cfg.ha.manager == "patroni"


def ha_layout(cfg: PlatformConfig, settings: DockerSettings, *, conf_dir: str, data_dir: str,
              socket_dir: str, pgbackrest_config: str, home: str,
              tls: TlsFiles) -> ha_hosts.HostLayout:
    """Where each database container keeps Patroni's files; `tls` the server's own (the
    key is written as postgres, 0600, by pgp-apply)."""
    return ha_hosts.HostLayout(
        conf_dir=conf_dir, data_dir=data_dir, socket_dir=socket_dir,
        pgbackrest_config=pgbackrest_config,
        bin_dir=f"/usr/lib/postgresql/{cfg.postgres.version}/bin",
        etcd_data_dir=f"{ETCD_DATA}/data", hba_networks=(settings.network_subnet,),
        tls_files=tls)


def addresses(cfg: PlatformConfig) -> tuple[str, ...]:
    """The database containers by their network alias, primary first."""
    return (PRIMARY_HOST, *(f"replica-{i}" for i in range(1, cfg.replicas + 1)))


def _fixed(settings: DockerSettings, offset: int) -> str:
    return str(ipaddress.ip_network(settings.network_subnet).network_address + offset)


def etcd_addresses(settings: DockerSettings) -> tuple[str, ...]:
    return tuple(_fixed(settings, ETCD_OFFSET + i) for i in range(1, ETCD_MEMBERS + 1))


def node_address(settings: DockerSettings, index: int) -> str:
    """Database container `index`'s fixed address (0: the first, "primary")."""
    return _fixed(settings, NODE_OFFSET + index)


def haproxy_address(settings: DockerSettings) -> str:
    return _fixed(settings, HAPROXY_OFFSET)


def dynamic_range(settings: DockerSettings) -> str:
    """The upper half of the network: where Docker may put containers without a fixed
    address (the pooler), so none takes an address the HA set holds."""
    return str(list(ipaddress.ip_network(settings.network_subnet).subnets(prefixlen_diff=1))[1])


def check(cfg: PlatformConfig, settings: DockerSettings) -> None:
    """Refuse, before any resource: fewer than three database containers (synchronous
    replication and a cluster that survives a lost node), or a network too small for
    the fixed addresses."""
    if not enabled(cfg):
        return
    if cfg.replicas + 1 < ETCD_MEMBERS:
        raise ConfigError(
            f"pg-platform:replicas={cfg.replicas}: pg-platform:ha.manager='patroni' on the "
            f"docker backend runs {ETCD_MEMBERS} Patroni containers beside {ETCD_MEMBERS} etcd "
            f"containers, so it needs replicas >= {ETCD_MEMBERS - 1}; raise replicas or keep "
            "ha.manager 'none'")
    size = ipaddress.ip_network(settings.network_subnet).num_addresses
    if size < MIN_ADDRESSES:
        raise ConfigError(
            f"pg-platform:docker.network_subnet={settings.network_subnet!r}: too small for "
            f"ha.manager 'patroni' (fixed addresses for etcd, Patroni and HAProxy in its lower "
            f"half); allowed are networks of {MIN_ADDRESSES} addresses or more (/26 or larger)")


def etcd_members(cfg: PlatformConfig, settings: DockerSettings) -> list[EtcdMember]:
    """The etcd containers, dialled by fixed address (etcd binds every address inside)."""
    return [EtcdMember(f"etcd-{i}", address, cfg.ha.etcd_client_port, cfg.ha.etcd_peer_port,
                       listen_host="0.0.0.0")
            for i, address in enumerate(etcd_addresses(settings), start=1)]


def etcd_files(cfg: PlatformConfig, settings: DockerSettings, index: int) -> dict[str, str]:
    """etcd container `index` (1-based)'s config file, relative to its config directory."""
    members = etcd_members(cfg, settings)
    return {"etcd.conf": etcd_conf(cfg, members[index - 1], members, f"{ETCD_DATA}/data",
                                   ETCD_TLS)}


def haproxy_file(cfg: PlatformConfig, settings: DockerSettings,
                 lay: ha_hosts.HostLayout) -> str:
    """HAProxy in front of every Patroni container, by fixed address (the renderer the
    local and prod stacks use): read-write on ha.haproxy_port, read-only on the next."""
    nodes = ha_hosts.nodes(cfg, tuple(node_address(settings, i)
                                      for i in range(cfg.replicas + 1)), lay)
    targets = ProxyTargets("0.0.0.0", cfg.ha.haproxy_port, HAPROXY_SOCKET)
    return haproxy_cfg(nodes, targets, TlsFiles(cert_file="", key_file="", ca_file=HAPROXY_CA))


def secrets(cfg: PlatformConfig, replicator: pulumi.Output[str],
            child: pulumi.ResourceOptions) -> pulumi.Output[HaSecrets] | None:
    """Break-glass (Patroni's superuser and pg_rewind user), the replicator's and the REST
    API's passwords; None without HA, so such a stack has no superuser password at all."""
    if not enabled(cfg):
        return None
    superuser = Password(f"{BREAK_GLASS}-password", opts=child).value
    rest = Password("patroni-restapi-password", rotation=cfg.rotation, opts=child).value
    return pulumi.Output.secret(pulumi.Output.all(superuser, replicator, rest).apply(
        lambda pw: HaSecrets(pw[0], pw[1], pw[2])))


def secret_uploads(cfg: PlatformConfig, settings: DockerSettings, lay: ha_hosts.HostLayout,
                   index: int, sec: pulumi.Output[HaSecrets] | None
                   ) -> dict[str, pulumi.Output[str]]:
    """Container `index`'s patroni.yml as a secret Output; nothing without HA."""
    if sec is None:
        return {}
    etcd = etcd_addresses(settings)
    text: pulumi.Output[str] = sec.apply(lambda s: ha_hosts.secret_files(
        cfg, index, addresses(cfg), lay, s, etcd_hosts=etcd)[lay.patroni_yml])
    return {lay.patroni_yml: pulumi.Output.secret(text)}


def applier_spec(cfg: PlatformConfig, lay: ha_hosts.HostLayout) -> dict[str, Any]:
    """The bundle's `patroni` section: Patroni is the container's main process, so the
    applier only writes files and talks to its REST API (`supervisor: container`)."""
    assert lay.tls_files is not None
    return {"unit": PATRONI_UNIT, "etcd_unit": "", "config": lay.patroni_yml,
            "ca_file": lay.tls_files.ca_file, "supervisor": "container",
            "members": [f"https://{a}:{cfg.ha.restapi_port}" for a in addresses(cfg)]}
