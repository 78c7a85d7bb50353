"""Real etcd, Patroni, HAProxy and PgBouncer processes for the HA tests and benchmarks.

Everything runs on loopback addresses and free ports in a scratch directory,
from the same renderers and process control the local backend uses.
"""

from __future__ import annotations

from pathlib import Path

from infra import config, pgctl, render, render_ha, tls
from infra.hostctl.etcd import EtcdCluster, LocalMember

ETCD_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def write_tls(base: Path, hosts: tuple[str, ...]) -> render.TlsFiles:
    """A CA and one server certificate naming `hosts`, as infra.tls.TlsFiles writes them."""
    d = pgctl.make_dir(base / "tls", 0o755)
    ca = tls.make_ca("pg-platform test CA")
    server = tls.make_server_cert(ca, "pg-platform test", [*hosts, "localhost"])
    files = render.TlsFiles(cert_file=str(d / "server.crt"), key_file=str(d / "server.key"),
                            ca_file=str(d / "ca.crt"))
    pgctl.write_file(Path(files.ca_file), ca.cert_pem, 0o644)
    pgctl.write_file(Path(files.cert_file), server.cert_pem, 0o644)
    pgctl.write_file(Path(files.key_file), server.key_pem, 0o600)
    return files


def free_port_on(hosts: tuple[str, ...], taken: set[int]) -> int:
    """A port free on every one of `hosts` (and not already chosen)."""
    for _ in range(200):
        port = pgctl.free_port()
        if port not in taken and port < 65000 and all(pgctl.port_free(h, port) for h in hosts):
            taken.add(port)
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def etcd_cluster(cfg: config.PlatformConfig, base: Path, files: render.TlsFiles,
                 client_port: int, peer_port: int) -> EtcdCluster:
    members = render_ha.etcd_members(ETCD_HOSTS, client_port, peer_port)
    cluster = EtcdCluster(tuple(LocalMember(m, base / "etcd" / m.name) for m in members),
                          files)
    cluster.write([render_ha.etcd_conf(cfg, m.member, members, str(m.data_dir), files)
                   for m in cluster.members])
    return cluster
