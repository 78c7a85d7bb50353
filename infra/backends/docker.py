"""The docker backend (stack dev): the platform as containers on the local Docker engine.

One user-defined network; a volume per PostgreSQL instance and one for the
pgBackRest repository; a primary, its streaming replicas and a PgBouncer, all
from one image (by default the TimescaleDB HA image, which also ships PostGIS,
pgBackRest and PgBouncer). Config files are the shared renderings, uploaded
into the containers; secret-bearing ones are built inside `Output.apply` so
they stay secrets in state. Ports are published on 127.0.0.1 only.

Image facts this relies on: PGDATA=/home/postgres/pgdata/data, the server runs
as `postgres` (uid 1000), and /docker-entrypoint.sh initialises an empty data
directory from POSTGRES_* variables and runs /docker-entrypoint-initdb.d/*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from infra import render
from infra.backends.base import Endpoints, LocalFiles, slot_name
from infra.backends.cloud_files import PasswordOutputs, dsn, ha_secrets, inventory_entry
from infra.config import DEFAULT_IMAGE, DockerSettings, PlatformConfig
from infra.passwords import Password
from infra.render import ha_hosts
from infra.render.passfile import host_pgpass
from infra.render.patroni import HaSecrets
from infra.render.roles import bootstrap_sql, userlist

BIND_ADDRESS = "127.0.0.1"          # published ports answer on loopback only
PGHOME = "/home/postgres/pgdata"    # the volume; the image's PGDATA is data/ below it
PGDATA = f"{PGHOME}/data"
BACKUP_DIR = f"{PGHOME}/backup"     # the backup volume, mounted inside the data volume
CONF_DIR = "/etc/pg-platform"
SOCKET_DIR = "/var/run/postgresql"
PGBACKREST_CONF = f"{CONF_DIR}/pgbackrest.conf"
PRIMARY_HOST = "primary"
PASSFILE = "/home/postgres/.pgpass"
POOLER_INI = f"{CONF_DIR}/pgbouncer.ini"
AUTH_FILE = f"{CONF_DIR}/userlist.txt"


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
                          passfile=PASSFILE)


def pooler_files(cfg: PlatformConfig, layout: Layout) -> str:
    paths = render.PoolerPaths(auth_file=AUTH_FILE, socket_dir="/tmp")
    targets = render.PoolerTargets(
        listen_address="*", primary_host=PRIMARY_HOST, primary_port=cfg.postgres.port,
        replica_hosts=tuple(layout.replica_host(i) for i in range(1, layout.replicas + 1)),
        replica_port=cfg.postgres.port)
    return render.pgbouncer_ini(cfg, paths, targets)


def server_files(cfg: PlatformConfig, settings: DockerSettings,
                 replica: int = 0) -> dict[str, str]:
    """The non-secret files of one PostgreSQL container (replica 0 is the primary)."""
    sb = standby(cfg, replica) if replica else None
    files = {
        f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
            cfg, host_paths(replica), timescaledb=True, listen="*", standby=sb),
        f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(cfg, (settings.network_subnet,),
            ident_map=False, tls=False),
        f"{CONF_DIR}/start.sh": render.render(
            "docker-start.sh.j2", role="replica" if replica else "primary", conf_dir=CONF_DIR,
            standby=sb, backup_dir="" if replica else BACKUP_DIR),
    }
    if not replica:
        files[PGBACKREST_CONF] = render.pgbackrest_conf(cfg, host_paths(), backup_paths())
        files["/docker-entrypoint-initdb.d/20-pgbackrest.sh"] = render.render(
            "docker-pgbackrest-init.sh.j2", config_path=PGBACKREST_CONF,
            stanza=cfg.backup.stanza)
    return files


def testinfra_hosts(container: dict[str, str], plain: dict[str, dict[str, str]]
                    ) -> list[dict[str, Any]]:
    """The hosts for the testinfra suite, from the container names and the exact non-secret
    texts uploaded to each (`plain`, by container: "primary", "replica-N", "pooler").

    Secret uploads (passfile, superuser password, bootstrap SQL, userlist) are left out.
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


def _healthcheck(command: list[str]) -> docker.ContainerHealthcheckArgs:
    return docker.ContainerHealthcheckArgs(tests=["CMD", *command], interval="5s",
                                           timeout="3s", retries=10, start_period="30s")


def ha_layout(cfg: PlatformConfig, settings: DockerSettings) -> ha_hosts.HostLayout:
    """ha.manager patroni: where each container keeps Patroni's and etcd's files."""
    return ha_hosts.HostLayout(
        conf_dir=CONF_DIR, data_dir=PGDATA, socket_dir=SOCKET_DIR,
        pgbackrest_config=PGBACKREST_CONF,
        bin_dir=f"/usr/lib/postgresql/{cfg.postgres.version}/bin",
        etcd_data_dir=f"{PGHOME}/etcd", hba_networks=(settings.network_subnet,))


def ha_addresses(cfg: PlatformConfig) -> tuple[str, ...]:
    """The database containers by their network alias, primary first (pg-1, pg-2, ...)."""
    return (PRIMARY_HOST, *(f"replica-{i}" for i in range(1, cfg.replicas + 1)))


def ha_uploads(cfg: PlatformConfig, settings: DockerSettings, index: int,
               secrets: pulumi.Output[HaSecrets] | None
               ) -> tuple[dict[str, str], dict[str, pulumi.Output[str]]]:
    """Container `index`'s HA files (ha_hosts): etcd's plain, patroni.yml secret."""
    if secrets is None:
        return {}, {}
    lay, addresses = ha_layout(cfg, settings), ha_addresses(cfg)
    plain = ha_hosts.plain_files(cfg, index, addresses, lay)
    text: pulumi.Output[str] = secrets.apply(
        lambda s: ha_hosts.secret_files(cfg, index, addresses, lay, s)[lay.patroni_yml])
    return plain, {lay.patroni_yml: pulumi.Output.secret(text)}


def _passwords(cfg: PlatformConfig, child: pulumi.ResourceOptions) -> PasswordOutputs:
    pg = cfg.postgres
    names = (pg.owner_role, pg.app_role, pg.replication_role, cfg.pooler.admin_user)
    pws = [Password(f"{name}-password", opts=child).value for name in names]
    return PasswordOutputs(*pws)


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """Network, volumes, primary, replicas and PgBouncer; returns how to reach them."""
    settings = cfg.docker or DockerSettings()
    pg = cfg.postgres
    child = pulumi.ResourceOptions(parent=parent)
    layout = Layout(prefix=f"pgp-{cfg.stack}", port=pg.port, replicas=cfg.replicas,
                    pooler_port=cfg.pooler.port)
    pws = _passwords(cfg, child)
    every = pws.all()
    ha = ha_secrets(cfg, child, pws.replicator)
    network = docker.Network("network", name=f"{layout.prefix}-net", driver="bridge",
                             ipam_configs=[docker.NetworkIpamConfigArgs(
                                 subnet=settings.network_subnet)], opts=child)
    image = docker.RemoteImage("image", name=settings.image, keep_locally=settings.keep_image,
                               opts=child)
    pooler_image = image if not settings.pooler_image else docker.RemoteImage(
        "pooler-image", name=settings.pooler_image, keep_locally=settings.keep_image, opts=child)
    backup_volume = docker.Volume("backup-volume", name=f"{layout.prefix}-backup", opts=child)
    # Rendered once: the same texts are uploaded and hashed into `testinfra_hosts`.
    plain = {"primary": server_files(cfg, settings),
             **{f"replica-{i}": server_files(cfg, settings, i)
                for i in range(1, cfg.replicas + 1)},
             "pooler": {POOLER_INI: pooler_files(cfg, layout)}}
    for i, name in enumerate(["primary", *(f"replica-{r}" for r in range(1, cfg.replicas + 1))]):
        plain[name].update(ha_uploads(cfg, settings, i, ha)[0])

    def server(name: str, host: str, published: int, replica: int,
               depends: list[pulumi.Resource]) -> docker.Container:
        volume = docker.Volume(f"{name}-volume", name=f"{layout.prefix}-{name}", opts=child)
        mounts = [docker.ContainerVolumeArgs(volume_name=volume.name, container_path=PGHOME)]
        secret = {f"{CONF_DIR}/pgpass": every.apply(
            lambda p: host_pgpass(cfg, p, PRIMARY_HOST, primary=not replica)),
            **ha_uploads(cfg, settings, replica, ha)[1]}
        envs: list[pulumi.Input[str]] = [f"PGDATA={PGDATA}", f"PGPORT={pg.port}",
                                         "NO_TS_TUNE=true", f"PGPASSFILE={PASSFILE}"]
        if not replica:
            mounts.append(docker.ContainerVolumeArgs(volume_name=backup_volume.name,
                                                     container_path=BACKUP_DIR))
            secret[f"{CONF_DIR}/superuser-password"] = pws.owner
            secret["/docker-entrypoint-initdb.d/10-bootstrap.sql"] = every.apply(
                lambda p: bootstrap_sql(cfg, p))
            envs += [f"POSTGRES_USER={pg.owner_role}", f"POSTGRES_DB={pg.database}",
                     f"POSTGRES_PASSWORD_FILE={CONF_DIR}/superuser-password"]
        return docker.Container(
            name, name=f"{layout.prefix}-{name}", image=image.image_id, hostname=host,
            command=["bash", f"{CONF_DIR}/start.sh"], envs=envs, volumes=mounts,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id,
                                                                    aliases=[host])],
            ports=[docker.ContainerPortArgs(internal=pg.port, external=published,
                                            ip=BIND_ADDRESS)],
            uploads=_uploads(plain[name], secret),
            healthcheck=_healthcheck(["pg_isready", "-q", "-h", SOCKET_DIR,
                                      "-p", str(pg.port)]),
            restart="unless-stopped", wait=True, wait_timeout=300,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=depends))

    primary = server("primary", PRIMARY_HOST, pg.port, 0, [])
    replicas = [server(f"replica-{i}", layout.replica_host(i), layout.replica_port(i), i,
                       [primary]) for i in range(1, cfg.replicas + 1)]
    pooler = docker.Container(
        "pooler", name=f"{layout.prefix}-pooler",
        image=pooler_image.image_id,
        command=["pgbouncer", POOLER_INI],
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id,
                                                                aliases=["pooler"])],
        ports=[docker.ContainerPortArgs(internal=cfg.pooler.port, external=cfg.pooler.port,
                                        ip=BIND_ADDRESS)],
        uploads=_uploads(plain["pooler"], {AUTH_FILE: every.apply(lambda p: userlist(cfg, p))}),
        healthcheck=_healthcheck(["pg_isready", "-q", "-h", "127.0.0.1",
                                  "-p", str(cfg.pooler.port)]),
        restart="unless-stopped", wait=True, wait_timeout=120,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[primary, *replicas]))
    containers = [primary, *replicas, pooler]      # in the order of `plain`
    return Endpoints(
        primary_dsn=dsn(pg.owner_role, pws.owner, BIND_ADDRESS, pg.port, pg.database),
        app_dsn=dsn(pg.app_role, pws.app, BIND_ADDRESS, pg.port, pg.database),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(*[
            dsn(pg.app_role, pws.app, BIND_ADDRESS, layout.replica_port(i), pg.database)
            for i in range(1, cfg.replicas + 1)])),
        pooler_dsn=dsn(pg.app_role, pws.app, BIND_ADDRESS, cfg.pooler.port, pg.database),
        pooler_admin_dsn=dsn(cfg.pooler.admin_user, pws.pooler_admin, BIND_ADDRESS,
                             cfg.pooler.port, "pgbouncer"),
        # The containers do not use TLS yet (issue #17 issues their certificates).
        ca_cert=pulumi.Output.from_input(""),
        primary_id=primary.id,
        testinfra_hosts=pulumi.Output.all(*[c.name for c in containers]).apply(
            lambda names: testinfra_hosts(dict(zip(plain, names, strict=True)), plain)),
        ready=[primary, pooler],
    )



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
