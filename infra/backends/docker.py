"""The docker backend (stack dev): the platform as containers on the local Docker engine.

One user-defined network; a volume per PostgreSQL instance and one for the
pgBackRest repository; a primary, its streaming replicas and a PgBouncer, all
from one image (by default the TimescaleDB HA image, which also ships PostGIS,
pgBackRest and PgBouncer). Config files are the shared renderings, uploaded
into the containers; secret-bearing ones are built inside `Output.apply` so
they stay secrets in state. Ports are published on 127.0.0.1 only.

As on prod: TLS everywhere (one CA per stack, one certificate per container,
hostssl only), the break-glass superuser logs in by peer on the socket only
(no password exists), and the roles come from the same idempotent script
(infra/render/roles_sql.py), run on every start of the primary, so a password
rotation reaches the database. A changed file replaces its container (deleted
first, since names and ports are fixed); the volumes, and so the data, stay.

Image facts this relies on: PGDATA=/home/postgres/pgdata/data, the server runs
as `postgres` (uid 1000), and /docker-entrypoint.sh initialises an empty data
directory and runs /docker-entrypoint-initdb.d/* with a socket-only server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from infra import dsn, render, roles
from infra.backends import docker_ha, rendered_checks
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec, cloud_passwords
from infra.backends.base import Endpoints, LocalFiles, slot_name
from infra.backends.cloud_files import inventory_entry
from infra.backends.local_layout import state_dir
from infra.cloud_tls import CaFile, HostCertificate, StackCa
from infra.config import DEFAULT_IMAGE, DockerSettings, PlatformConfig
from infra.passwords import Password
from infra.render.passfile import pgpass
from infra.render.pooler import pooler_users, userlist_txt
from infra.render.roles_sql import bootstrap_script

BIND_ADDRESS = "127.0.0.1"          # published ports answer on loopback only
PGHOME = "/home/postgres/pgdata"    # the volume; the image's PGDATA is data/ below it
PGDATA = f"{PGHOME}/data"
BACKUP_DIR = f"{PGHOME}/backup"     # the backup volume, mounted inside the data volume
MARKS = f"{PGHOME}/.pg-platform"    # bootstrap progress, on the data volume
READY = f"{MARKS}/ready"            # the healthcheck's condition, besides a TCP answer
CONF_DIR = "/etc/pg-platform"
SOCKET_DIR = "/var/run/postgresql"
PGBACKREST_CONF = f"{CONF_DIR}/pgbackrest.conf"
PRIMARY_HOST = "primary"
PASSFILE = "/home/postgres/.pgpass"
POOLER_INI = f"{CONF_DIR}/pgbouncer.ini"
AUTH_FILE = f"{CONF_DIR}/userlist.txt"
TLS_UPLOADS = (f"{CONF_DIR}/tls/ca.crt", f"{CONF_DIR}/tls/server.crt",
               f"{CONF_DIR}/tls/server.key")
# Uploads are root's and 0644: start.sh copies the key to a 0600 file of the server's user.
SERVER_TLS = render.TlsFiles(cert_file=TLS_UPLOADS[1], key_file="/home/postgres/tls/server.key",
                             ca_file=TLS_UPLOADS[0])
POOLER_TLS = render.TlsFiles(cert_file=TLS_UPLOADS[1], key_file="/tmp/tls/server.key",
                             ca_file=TLS_UPLOADS[0])
SECRET_UPLOADS = frozenset({f"{CONF_DIR}/pgpass", f"{CONF_DIR}/roles.sql", AUTH_FILE,
                            TLS_UPLOADS[2], f"{CONF_DIR}/patroni.yml"})
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Layout:
    """Names and ports of the containers, derived once from settings."""

    prefix: str
    port: int
    replicas: int
    pooler_port: int

    def replica_host(self, i: int) -> str:
        return f"replica-{i}"

    def replica_port(self, i: int) -> int:
        """Published port of replica i (1-based): the ports after the primary's."""
        return self.port + i


def host_paths(replica: int = 0) -> render.HostPaths:
    """Only the primary archives WAL (to the backup volume); replicas have no repository."""
    return render.HostPaths(data_dir=PGDATA, socket_dir=SOCKET_DIR,
                            pgbackrest_config=None if replica else PGBACKREST_CONF)


def backup_paths() -> render.BackupPaths:
    return render.BackupPaths(repo_path=BACKUP_DIR, log_path=f"{PGHOME}/pgbackrest/log",
                              lock_path="/tmp/pgbackrest", spool_path=f"{PGHOME}/pgbackrest/spool")


def standby(cfg: PlatformConfig, i: int) -> render.Standby:
    return render.Standby(primary_host=PRIMARY_HOST, primary_port=cfg.postgres.port,
                          user=cfg.postgres.replication_role, slot=slot_name(i),
                          passfile=PASSFILE, sslrootcert=SERVER_TLS.ca_file)


def pooler_files(cfg: PlatformConfig, layout: Layout) -> str:
    paths = render.PoolerPaths(auth_file=AUTH_FILE, socket_dir="/tmp")
    targets = render.PoolerTargets(
        listen_address="*", primary_host=PRIMARY_HOST, primary_port=cfg.postgres.port,
        replica_hosts=tuple(layout.replica_host(i) for i in range(1, layout.replicas + 1)),
        replica_port=cfg.postgres.port)
    return render.pgbouncer_ini(cfg, paths, targets, POOLER_TLS)


def server_files(cfg: PlatformConfig, settings: DockerSettings,
                 replica: int = 0) -> dict[str, str]:
    """The non-secret files of one PostgreSQL container (replica 0 is the primary)."""
    sb = standby(cfg, replica) if replica else None
    files = {
        f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
            cfg, host_paths(replica), timescaledb=True, listen="*", standby=sb,
            tls=SERVER_TLS),
        f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(cfg, (settings.network_subnet,),
                                                      ident_map=False, tls=True),
        f"{CONF_DIR}/start.sh": render.render(
            "docker-start.sh.j2", role="replica" if replica else "primary", conf_dir=CONF_DIR,
            standby=sb, backup_dir="" if replica else BACKUP_DIR, ready_marker=READY,
            key_dir="/home/postgres/tls"),
    }
    if not replica:
        files[PGBACKREST_CONF] = render.pgbackrest_conf(cfg, host_paths(), backup_paths())
        files[f"{CONF_DIR}/finish-init.sh"] = render.render(
            "docker-finish-init.sh.j2", socket_dir=SOCKET_DIR, port=cfg.postgres.port,
            conf_dir=CONF_DIR, marks=MARKS, ready_marker=READY, config_path=PGBACKREST_CONF,
            stanza=cfg.backup.stanza)
        files["/docker-entrypoint-initdb.d/10-pg-platform.sh"] = (
            f"# pg-platform: sourced by the image's entrypoint on a new cluster.\n"
            f"bash {CONF_DIR}/finish-init.sh\n")
    return files


def testinfra_hosts(container: dict[str, str], plain: dict[str, dict[str, str]]
                    ) -> list[dict[str, Any]]:
    """The hosts for the testinfra suite, from the container names and the exact non-secret
    texts uploaded to each (`plain`, by container: "primary", "replica-N", "pooler").

    Secret uploads (passfile, roles script, userlist, TLS key) are left out.
    """
    hosts = []
    for name, files in plain.items():
        spec = f"docker://{container[name]}"
        if name == "pooler":
            hosts.append(inventory_entry(name, "pooler", spec, files,
                                         pooler_ini=POOLER_INI, auth_file=AUTH_FILE))
        elif name == "primary":
            hosts.append(inventory_entry(name, "primary", spec, files, data_dir=PGDATA,
                                         pgbackrest_config=PGBACKREST_CONF))
        else:
            hosts.append(inventory_entry(name, "replica", spec, files, data_dir=PGDATA))
    return hosts


def _uploads(plain: dict[str, str],
             secret: dict[str, pulumi.Output[str]]) -> list[docker.ContainerUploadArgs]:
    """Uploads in a fixed order, so an unchanged file never shows as a diff."""
    items: dict[str, pulumi.Input[str]] = {**plain, **secret}
    return [docker.ContainerUploadArgs(file=path, content=items[path]) for path in sorted(items)]


def healthcheck(port: int, marker: str | None) -> docker.ContainerHealthcheckArgs:
    """Healthy only when the final server answers on TCP (the entrypoint's and start.sh's
    temporary servers listen on the socket only) and, for servers, bootstrap has finished."""
    probe = f"pg_isready -q -h 127.0.0.1 -p {port}"
    test = f"test -e {marker} && {probe}" if marker else probe
    return docker.ContainerHealthcheckArgs(tests=["CMD", "bash", "-c", test], interval="5s",
                                           timeout="3s", retries=10, start_period="30s")


def container_options(parent: pulumi.Resource,
                      depends: list[pulumi.Resource]) -> pulumi.ResourceOptions:
    """Fixed names and host ports: the old container must go before its replacement."""
    return pulumi.ResourceOptions(parent=parent, depends_on=depends, delete_before_replace=True)


def passwords(cfg: PlatformConfig,
              child: pulumi.ResourceOptions) -> dict[str, pulumi.Output[str]]:
    pg = cfg.postgres
    names = {"owner": pg.owner_role, "app": pg.app_role, "replicator": pg.replication_role,
             "pooler_admin": cfg.pooler.admin_user, "monitor": roles.MONITOR,
             "tenant_admin": roles.TENANT_ADMIN}
    return {key: Password(f"{role}-password", rotation=cfg.rotation, opts=child).value
            for key, role in names.items()}


def cert_names(layout: Layout, name: str) -> list[str]:
    """The container's network alias, and loopback where its port is published."""
    names = [name, BIND_ADDRESS, "localhost"]
    if name.startswith("replica-") and layout.replicas > 1:
        # PgBouncer 1.18 checks a certificate against the read-only entry's whole host list.
        names.append(",".join(layout.replica_host(i) for i in range(1, layout.replicas + 1)))
    return names


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """Network, volumes, primary, replicas and PgBouncer; returns how to reach them."""
    settings = cfg.docker or DockerSettings()
    pg = cfg.postgres
    child = pulumi.ResourceOptions(parent=parent)
    layout = Layout(prefix=f"pgp-{cfg.stack}", port=pg.port, replicas=cfg.replicas,
                    pooler_port=cfg.pooler.port)
    ha_lay = docker_ha.ha_layout(cfg, settings, conf_dir=CONF_DIR, data_dir=PGDATA,
                                 socket_dir=SOCKET_DIR, pgbackrest_config=PGBACKREST_CONF,
                                 home=PGHOME, tls=SERVER_TLS)
    docker_ha.check(cfg, ha_lay)
    # Rendered once: the same texts are checked, uploaded and hashed into `testinfra_hosts`.
    plain = {"primary": server_files(cfg, settings) | docker_ha.plain_uploads(cfg, ha_lay, 0),
             **{f"replica-{i}": server_files(cfg, settings, i)
                | docker_ha.plain_uploads(cfg, ha_lay, i) for i in range(1, cfg.replicas + 1)},
             "pooler": {POOLER_INI: pooler_files(cfg, layout)}}
    for node, node_files in plain.items():
        rendered_checks.check_files(cfg, node, node_files)
    pws = passwords(cfg, child)
    every = cloud_passwords(pws)
    ha = docker_ha.secrets(cfg, pws["replicator"], child)  # None without ha.manager patroni
    if not _DIGEST.search(settings.image):
        pulumi.log.warn(f"pg-platform:docker.image={settings.image!r} is not pinned by digest; "
                        "add @sha256:<digest> (docker buildx imagetools inspect IMAGE) so a "
                        "rebuilt container runs the same image")
    ca = StackCa("tls-ca", cfg.stack, opts=child)
    ca_file = str(state_dir(cfg) / "ca.crt")
    ca_local = CaFile("tls-ca-file", ca_file, ca, opts=child)
    network = docker.Network("network", name=f"{layout.prefix}-net", driver="bridge",
                             ipam_configs=[docker.NetworkIpamConfigArgs(
                                 subnet=settings.network_subnet)], opts=child)
    image = docker.RemoteImage("image", name=settings.image, keep_locally=settings.keep_image,
                               opts=child)
    pooler_image = image if not settings.pooler_image else docker.RemoteImage(
        "pooler-image", name=settings.pooler_image, keep_locally=settings.keep_image, opts=child)
    backup_volume = docker.Volume("backup-volume", name=f"{layout.prefix}-backup", opts=child)

    def tls_uploads(name: str) -> dict[str, pulumi.Output[str]]:
        cert = HostCertificate(f"{name}-tls", ca, cert_names(layout, name), opts=child)
        key: pulumi.Output[str] = pulumi.Output.secret(cert.key)
        return dict(zip(TLS_UPLOADS, (ca.ca_cert, cert.cert, key), strict=True))

    def server(name: str, host: str, published: int, replica: int,
               depends: list[pulumi.Resource]) -> docker.Container:
        volume = docker.Volume(f"{name}-volume", name=f"{layout.prefix}-{name}", opts=child)
        mounts = [docker.ContainerVolumeArgs(volume_name=volume.name, container_path=PGHOME)]

        def passfile(p: CloudPasswords) -> str:
            """A replica's replicator line; the primary needs none (pgBackRest: peer)."""
            if not replica:
                return "# pg-platform: no passwords on the primary\n"
            return pgpass([(PRIMARY_HOST, str(pg.port), "*", pg.replication_role,
                            p.replicator)])

        secret = {f"{CONF_DIR}/pgpass": every.apply(passfile), **tls_uploads(name),
                  **docker_ha.secret_uploads(cfg, ha_lay, replica, ha)}
        envs: list[pulumi.Input[str]] = [f"PGDATA={PGDATA}", f"PGPORT={pg.port}",
                                         "NO_TS_TUNE=true", f"PGPASSFILE={PASSFILE}"]
        if not replica:
            mounts.append(docker.ContainerVolumeArgs(volume_name=backup_volume.name,
                                                     container_path=BACKUP_DIR))
            secret[f"{CONF_DIR}/roles.sql"] = every.apply(
                lambda p: bootstrap_script(bootstrap_spec(cfg, p)))
            # The break-glass superuser gets no password: the entrypoint's generated
            # pg_hba.conf is never used (hba_file is ours, peer on the socket only).
            envs += ["POSTGRES_USER=postgres", "POSTGRES_HOST_AUTH_METHOD=trust"]
        return docker.Container(
            name, name=f"{layout.prefix}-{name}", image=image.image_id, hostname=host,
            command=["bash", f"{CONF_DIR}/start.sh"], envs=envs, volumes=mounts,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id,
                                                                    aliases=[host])],
            ports=[docker.ContainerPortArgs(internal=pg.port, external=published,
                                            ip=BIND_ADDRESS)],
            uploads=_uploads(plain[name], secret), healthcheck=healthcheck(pg.port, READY),
            restart="unless-stopped", wait=True, wait_timeout=900,
            opts=container_options(parent, depends))

    primary = server("primary", PRIMARY_HOST, pg.port, 0, [])
    replicas = [server(f"replica-{i}", layout.replica_host(i), layout.replica_port(i), i,
                       [primary]) for i in range(1, cfg.replicas + 1)]
    userlist = every.apply(lambda p: userlist_txt(pooler_users(cfg, p.app, p.pooler_admin)))
    key_dir = POOLER_TLS.key_file.rsplit("/", 1)[0]
    pooler = docker.Container(
        "pooler", name=f"{layout.prefix}-pooler",
        image=pooler_image.image_id,
        command=["bash", "-c", f"install -d -m 0700 {key_dir} && install -m 0600 "
                 f"{TLS_UPLOADS[2]} {POOLER_TLS.key_file} && exec pgbouncer {POOLER_INI}"],
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id,
                                                                aliases=["pooler"])],
        ports=[docker.ContainerPortArgs(internal=cfg.pooler.port, external=cfg.pooler.port,
                                        ip=BIND_ADDRESS)],
        # File descriptors for every client PgBouncer may accept (Docker's default: 1024).
        ulimits=[docker.ContainerUlimitArgs(name="nofile", soft=_nofile(cfg),
                                            hard=_nofile(cfg))],
        uploads=_uploads(plain["pooler"], {AUTH_FILE: pulumi.Output.secret(userlist),
                                            **tls_uploads("pooler")}),
        healthcheck=healthcheck(cfg.pooler.port, None),
        restart="unless-stopped", wait=True, wait_timeout=120,
        opts=container_options(parent, [primary, *replicas]))
    containers = [primary, *replicas, pooler]      # in the order of `plain`

    def client(port: int, user: str, password: pulumi.Input[str],
               database: str = pg.database) -> pulumi.Output[str]:
        return dsn.output(host=BIND_ADDRESS, port=port, user=user, password=password,
                          dbname=database, sslmode="verify-full", sslrootcert=ca_file)

    return Endpoints(
        primary_dsn=client(pg.port, pg.owner_role, pws["owner"]),
        app_dsn=client(pg.port, pg.app_role, pws["app"]),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(*[
            client(layout.replica_port(i), pg.app_role, pws["app"])
            for i in range(1, cfg.replicas + 1)])),
        pooler_dsn=client(cfg.pooler.port, pg.app_role, pws["app"]),
        pooler_admin_dsn=client(cfg.pooler.port, cfg.pooler.admin_user, pws["pooler_admin"],
                                "pgbouncer"),
        ca_cert=ca.ca_cert,
        primary_id=primary.id,
        testinfra_hosts=pulumi.Output.all(*[c.name for c in containers]).apply(
            lambda names: testinfra_hosts(dict(zip(plain, names, strict=True)), plain)),
        ready=[primary, pooler, ca_local],
        monitor_dsn=client(pg.port, roles.MONITOR, pws["monitor"]),
    )


def _nofile(cfg: PlatformConfig) -> int:
    return cfg.pooler.max_client_conn + cfg.postgres.max_connections * (1 + cfg.replicas) + 128


_IMAGE_VERSION = re.compile(r":pg(1[0-9])(?![0-9])")


class DockerBackend:
    """Containers on the local Docker engine, from one PostgreSQL image."""

    name = "docker"

    def versions(self, cfg: PlatformConfig) -> tuple[int, ...]:
        """The major version the image's tag names (timescaledb-ha's `:pg15…`), or none."""
        image = cfg.docker.image if cfg.docker else DEFAULT_IMAGE
        found = _IMAGE_VERSION.search(image)
        return (int(found.group(1)),) if found else ()

    def build(self, cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
        return build(cfg, parent)

    def local_files(self, cfg: PlatformConfig) -> LocalFiles | None:
        return None  # pgBackRest runs in the primary's container


BACKEND = DockerBackend()
