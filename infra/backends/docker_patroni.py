"""Dev with `ha.manager: patroni`: the etcd and HAProxy containers, and what makes a
database container a Patroni one (its command, address and mounts).

The files are infra/backends/docker_ha.py's. etcd's image has no applier (and no shell),
so its config, certificate and key reach it through a read-only bind-mounted directory
(`ConfigDir`, 0700/0600 on the machine running Pulumi); etcd reads them at start. HAProxy's
config and the stack's CA (no secret in either) are uploads, so a change to them re-creates
the HAProxy container, which holds no state. No port of etcd or Patroni's REST API is
published; HAProxy's two are, on 127.0.0.1 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from infra.backends import docker_delivery as delivery
from infra.backends import docker_ha as ha
from infra.cloud_tls import HostCertificate, StackCa
from infra.config import DockerSettings, PlatformConfig
from infra.config.ha import ETCD_MEMBERS
from infra.render.ha_hosts import HostLayout

BIND_ADDRESS = "127.0.0.1"
ETCD_BIN = "/usr/local/bin/etcd"        # quay.io/coreos/etcd's programs
ETCDCTL_BIN = "/usr/local/bin/etcdctl"
OS_USER = "postgres"


def patroni_command(lay: HostLayout) -> dict[str, Any]:
    """A database container's command: tini, then container_entry.sh, which writes the
    bundle's files, starts the bundle watcher and execs `patroni <patroni.yml>` as postgres
    (infra/hostagent/container_entry.sh). Patroni creates the replicas itself."""
    entry = f"{delivery.BUNDLE_MOUNT}/{delivery.ENTRY_SCRIPT}"
    return {"user": "root", "init": True, "entrypoints": ["bash"],
            "command": [entry, delivery.BUNDLE_MOUNT, OS_USER, f"{lay.conf_dir}/secret",
                        "patroni", lay.patroni_yml],
            # Patroni stops PostgreSQL itself (fast shutdown) and gives up the leader key.
            "stop_timeout": 120}


def node_network(settings: DockerSettings, network: docker.Network, alias: str,
                 index: int) -> docker.ContainerNetworksAdvancedArgs:
    return docker.ContainerNetworksAdvancedArgs(
        name=network.id, aliases=[alias], ipv4_address=ha.node_address(settings, index))


def cert_names(settings: DockerSettings, index: int) -> list[str]:
    """What else a Patroni container's certificate names: its fixed address, and
    `haproxy`, the name PgBouncer verifies (TLS runs end to end through HAProxy)."""
    return [ha.node_address(settings, index), ha.HAPROXY_HOST]


def etcd_healthcheck(cfg: PlatformConfig) -> docker.ContainerHealthcheckArgs:
    """Healthy once this member answers over mutual TLS, i.e. the cluster has a quorum."""
    tls = ha.ETCD_TLS
    return docker.ContainerHealthcheckArgs(
        tests=["CMD", ETCDCTL_BIN, f"--endpoints=https://127.0.0.1:{cfg.ha.etcd_client_port}",
               f"--cacert={tls.ca_file}", f"--cert={tls.cert_file}", f"--key={tls.key_file}",
               "endpoint", "health"],
        interval="5s", timeout="3s", retries=24, start_period="20s")


def _with_tls(text: dict[str, str]) -> Any:
    """etcd's config directory: `text` and the member's TLS files, once they are known."""
    def files(pem: list[str]) -> dict[str, str]:
        return {**text, "tls/ca.crt": pem[0], "tls/server.crt": pem[1],
                "tls/server.key": pem[2]}
    return files


def etcd_cluster(cfg: PlatformConfig, settings: DockerSettings, *, prefix: str,
                 network: docker.Network, ca: StackCa, root: Path,
                 parent: pulumi.Resource) -> list[docker.Container]:
    """Three etcd containers with fixed addresses, a data volume each, mutual TLS."""
    child = pulumi.ResourceOptions(parent=parent)
    image = docker.RemoteImage("etcd-image", name=settings.etcd_image,
                               keep_locally=settings.keep_image, opts=child)
    out = []
    for i in range(1, ETCD_MEMBERS + 1):
        name, address = f"etcd-{i}", ha.etcd_addresses(settings)[i - 1]
        cert = HostCertificate(f"{name}-tls", ca, [name, address, BIND_ADDRESS], opts=child)
        files = pulumi.Output.all(ca.ca_cert, cert.cert, cert.key).apply(
            _with_tls(ha.etcd_files(cfg, settings, i)))
        conf = delivery.ConfigDir(f"{name}-config", root / name, files, opts=child)
        volume = docker.Volume(f"{name}-volume", name=f"{prefix}-{name}", opts=child)
        out.append(docker.Container(
            name, name=f"{prefix}-{name}", image=image.image_id, hostname=name,
            entrypoints=[ETCD_BIN], command=["--config-file", ha.ETCD_CONF],
            volumes=[docker.ContainerVolumeArgs(volume_name=volume.name,
                                                container_path=ha.ETCD_DATA),
                     docker.ContainerVolumeArgs(host_path=conf.directory,
                                                container_path=ha.ETCD_CONF_DIR,
                                                read_only=True)],
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(
                name=network.id, aliases=[name], ipv4_address=address)],
            healthcheck=etcd_healthcheck(cfg), restart="unless-stopped", wait=True,
            wait_timeout=300, stop_timeout=30,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[conf],
                                        delete_before_replace=True)))
    return out


def haproxy_probe(socket: str = ha.HAPROXY_SOCKET) -> str:
    """Succeeds once the read-write listener has a server up (Patroni's leader): `show
    stat`'s 18th CSV field is the status (tests/integration/test_dev_haproxy_probe.py runs
    it against a real HAProxy). The image ships socat."""
    return (f"echo 'show stat' | socat - UNIX-CONNECT:{socket} | "
            "grep -Eq '^primary,pg-[0-9]+,([^,]*,){15}UP'")


def haproxy_healthcheck() -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(tests=["CMD", "sh", "-c", haproxy_probe()],
                                           interval="2s", timeout="2s", retries=60,
                                           start_period="5s")


def haproxy(cfg: PlatformConfig, settings: DockerSettings, lay: HostLayout, *, prefix: str,
            network: docker.Network, ca: StackCa, depends: list[pulumi.Resource],
            parent: pulumi.Resource) -> docker.Container:
    """HAProxy in front of the Patroni containers; PgBouncer dials it as `haproxy`."""
    child = pulumi.ResourceOptions(parent=parent)
    image = docker.RemoteImage("haproxy-image", name=settings.haproxy_image,
                               keep_locally=settings.keep_image, opts=child)
    port = cfg.ha.haproxy_port
    return docker.Container(
        "haproxy", name=f"{prefix}-haproxy", image=image.image_id, hostname=ha.HAPROXY_HOST,
        # -W master-worker, -db in the foreground: the image's own command, explicit.
        entrypoints=["haproxy"], command=["-W", "-db", "-f", ha.HAPROXY_CFG],
        uploads=[docker.ContainerUploadArgs(file=ha.HAPROXY_CFG,
                                            content=ha.haproxy_file(cfg, settings, lay)),
                 docker.ContainerUploadArgs(file=ha.HAPROXY_CA, content=ca.ca_cert)],
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(
            name=network.id, aliases=[ha.HAPROXY_HOST],
            ipv4_address=ha.haproxy_address(settings))],
        ports=[docker.ContainerPortArgs(internal=p, external=p, ip=BIND_ADDRESS)
               for p in (port, port + 1)],
        healthcheck=haproxy_healthcheck(), restart="unless-stopped", wait=True,
        wait_timeout=300, stop_timeout=10,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends,
                                    delete_before_replace=True))
