"""The docker backend (stack dev): the platform as containers on the local Docker engine.

One user-defined network; a volume per PostgreSQL instance and one for the
pgBackRest repository; a primary, its streaming replicas and a PgBouncer, all
from one image (by default the TimescaleDB HA image, which also ships PostGIS,
pgBackRest and PgBouncer). Ports are published on 127.0.0.1 only.

Containers converge in place, as prod hosts do (docs/day2.md): everything that
may change on day 2 (rendered files, roles SQL, slots) is in each container's
versioned bundle (infra/backends/docker_bundle.py), delivered through a
read-only bind-mounted directory (infra/backends/docker_delivery.py); the
container's main process runs the prod applier on it and reports, and
`ContainersConverged` waits for every container's report. A container's own
inputs (image, mounts, env, ports, command) do not depend on any of it, so a
day-2 change replaces no container; an image change does (deleted first,
since names and ports are fixed), and the volumes, and so the data, stay.

As on prod: TLS everywhere (one CA per stack, one certificate per container,
hostssl only), the break-glass superuser logs in by peer on the socket only
(no password exists), and the roles come from the same idempotent script
(infra/render/roles_sql.py), which pgp-apply runs when it changes.

Scheduled backups (`backup.schedule`) come from the local stack's scheduler
daemon on the Docker host (`backup_scheduler` below), which runs pgBackRest in
the primary container through `docker exec`: the image has no systemd or cron,
and a schedule change then restarts only that daemon, never a container.

Image facts this relies on: PGDATA=/home/postgres/pgdata/data, the `postgres`
user (uid 1000), PostgreSQL's programs in /usr/lib/postgresql/<major>/bin,
python3 (the image's Patroni needs it), runuser, pgbackrest and pgbouncer.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from infra import dsn, roles
from infra.backends import docker_delivery as delivery
from infra.backends import docker_ha, docker_patroni, rendered_checks
from infra.backends.aws_bundle import cloud_passwords
from infra.backends.base import Endpoints, LocalFiles
from infra.backends.converge import ContainersConverged
from infra.backends.docker_bundle import OS_USER
from infra.backends.docker_files import (
    BACKUP_DIR,
    BIND_ADDRESS,
    NOFILE,
    PASSFILE,
    PGBACKREST_CONF,
    PGDATA,
    PGHOME,
    PRIMARY_HOST,
    TLS_FILES,
    Layout,
    patroni_layout,
    pooler_bundle,
    pooler_files,
    server_bundle,
    server_files,
    testinfra_hosts,
)
from infra.backends.host_bundle import version_of
from infra.backends.local_backup_scheduler import BackupScheduler, scheduler_props
from infra.backends.local_layout import state_dir
from infra.cloud_tls import CaFile, HostCertificate, StackCa
from infra.config import DEFAULT_IMAGE, DockerSettings, PlatformConfig
from infra.errors import ConfigError
from infra.hostctl.pgbackrest import PgBackRest
from infra.passwords import Password


def healthcheck(port: int) -> docker.ContainerHealthcheckArgs:
    """Healthy once pgp-apply has reported a bundle applied and the server answers on TCP."""
    test = (f"grep -q '\"ok\": true' {delivery.STATUS_FILE} && "
            f"pg_isready -q -h 127.0.0.1 -p {port}")
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


def agent_volumes(bundle: delivery.ContainerBundle) -> list[docker.ContainerVolumeArgs]:
    """The bundle directory read-only, the status directory read-write; paths only, so a
    new bundle never changes the container."""
    return [docker.ContainerVolumeArgs(host_path=bundle.bundle_dir,
                                       container_path=delivery.BUNDLE_MOUNT, read_only=True),
            docker.ContainerVolumeArgs(host_path=bundle.status_dir,
                                       container_path=delivery.STATUS_MOUNT)]


def agent_command() -> dict[str, Any]:
    """Root runs pgp-apply's loop (tini reaps the servers' orphans); the servers run as
    postgres. Explicit, so the image's own entrypoint and command never run."""
    return {"user": "root", "init": True, "entrypoints": ["python3"],
            "command": [delivery.WATCH, delivery.BUNDLE_MOUNT], "stop_timeout": 60}


# What selects the engine for the Docker CLI (none is a secret); the scheduler daemon's
# environment is otherwise only PATH and LANG.
DOCKER_CLI_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY",
                  "DOCKER_CERT_PATH", "HOME")


def container_prefix(cfg: PlatformConfig) -> str:
    return f"pgp-{cfg.stack}"


def exec_argv(container: str) -> list[str]:
    """How the Docker host runs pgBackRest in `container`: as postgres, which logs in by
    peer on the container's socket (no password exists). The CLI by its full path: the
    scheduler daemon's PATH is /usr/bin:/bin only."""
    return [shutil.which("docker") or "docker", "exec", "-u", OS_USER, container]


def pgbackrest_exec(container: pulumi.Input[str]) -> pulumi.Output[list[str]]:
    return pulumi.Output.from_input(container).apply(exec_argv)


def docker_cli_env() -> dict[str, str]:
    """The engine `pulumi up` talks to (`docker:host` first), for the Docker CLI."""
    env = {k: os.environ[k] for k in DOCKER_CLI_ENV if os.environ.get(k)}
    host = pulumi.Config("docker").get("host")
    if host:
        env["DOCKER_HOST"] = host
    return env


def backup_scheduler(cfg: PlatformConfig, primary: docker.Container,
                     depends: list[pulumi.Resource],
                     parent: pulumi.Resource) -> BackupScheduler:
    """The local stack's scheduler daemon, on the Docker host, with pgBackRest in the
    primary container. Its inputs are the schedule and the container's name only, so a
    schedule change restarts the daemon and touches no container or volume."""
    sched = cfg.backup.schedule
    run_dir = str(state_dir(cfg) / "backup-scheduler")
    props = scheduler_props(
        config_path=PGBACKREST_CONF, stanza=cfg.backup.stanza,
        schedule={"full": sched.full, "diff": sched.diff, "incr": sched.incr},
        run_dir=run_dir, log_path=run_dir, exec_prefix=pgbackrest_exec(primary.name),
        env=docker_cli_env())
    return BackupScheduler("backup-scheduler", props,
                           pulumi.ResourceOptions(parent=parent, depends_on=depends))


def check_pooler_limit(cfg: PlatformConfig) -> None:
    need = _nofile(cfg)
    if need > NOFILE:
        raise ConfigError(
            f"pg-platform:pooler.max_client_conn={cfg.pooler.max_client_conn}: PgBouncer would "
            f"need {need} file descriptors with max_connections={cfg.postgres.max_connections} "
            f"and {cfg.replicas} replicas; allowed is a total up to {NOFILE} on dev")


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """Network, volumes, bundles, primary, replicas and PgBouncer; how to reach them."""
    settings = cfg.docker or DockerSettings()
    pg = cfg.postgres
    child = pulumi.ResourceOptions(parent=parent)
    layout = Layout(prefix=container_prefix(cfg), port=pg.port, replicas=cfg.replicas,
                    pooler_port=cfg.pooler.port)
    ha_on = docker_ha.enabled(cfg)
    ha_lay = patroni_layout(cfg)
    docker_ha.check(cfg, settings)
    check_pooler_limit(cfg)
    # Rendered once: the same texts are checked, delivered and hashed into `testinfra_hosts`.
    plain = {"primary": server_files(cfg, settings),
             **{f"replica-{i}": server_files(cfg, settings, i)
                for i in range(1, cfg.replicas + 1)},
             "pooler": pooler_files(cfg, layout)}
    for node, node_files in plain.items():
        rendered_checks.check_files(cfg, node, node_files)
    pws = passwords(cfg, child)
    every = cloud_passwords(pws)
    ha = docker_ha.secrets(cfg, pws["replicator"], child)  # None without ha.manager patroni
    ca = StackCa("tls-ca", cfg.stack, opts=child)
    ca_file = str(state_dir(cfg) / "ca.crt")
    ca_local = CaFile("tls-ca-file", ca_file, ca, opts=child)
    bundles_root = state_dir(cfg) / "docker"
    # With Patroni, Docker hands out only the upper half: the HA set has fixed addresses.
    network = docker.Network("network", name=f"{layout.prefix}-net", driver="bridge",
                             ipam_configs=[docker.NetworkIpamConfigArgs(
                                 subnet=settings.network_subnet,
                                 ip_range=docker_ha.dynamic_range(settings) if ha_on else None)],
                             opts=child)
    image = docker.RemoteImage("image", name=settings.image, keep_locally=settings.keep_image,
                               opts=child)
    pooler_image = image if not settings.pooler_image else docker.RemoteImage(
        "pooler-image", name=settings.pooler_image, keep_locally=settings.keep_image, opts=child)
    backup_volume = docker.Volume("backup-volume", name=f"{layout.prefix}-backup", opts=child)
    versions: dict[str, pulumi.Output[str]] = {}

    def deliver(name: str, make: Any, secret: dict[str, pulumi.Output[str]],
                depends: list[pulumi.Resource],
                more_names: list[str] | None = None) -> delivery.ContainerBundle:
        """Container `name`'s bundle: `make(files, passwords)` once every secret is known."""
        cert = HostCertificate(f"{name}-tls", ca, cert_names(layout, name) + (more_names or []),
                               opts=child)
        outputs = {**dict(zip(TLS_FILES, (ca.ca_cert, cert.cert, cert.key), strict=True)),
                   **secret}
        keys = sorted(outputs)
        text: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.all(
            every, *[outputs[k] for k in keys]).apply(
                lambda a: make({**plain[name], **dict(zip(keys, a[1:], strict=True))}, a[0])))
        versions[name] = text.apply(version_of)
        return delivery.ContainerBundle(f"{name}-bundle", bundles_root / name, text,
                                        opts=pulumi.ResourceOptions(parent=parent,
                                                                    depends_on=depends))

    def server(name: str, host: str, published: int, replica: int,
               depends: list[pulumi.Resource]) -> docker.Container:
        volume = docker.Volume(f"{name}-volume", name=f"{layout.prefix}-{name}", opts=child)
        bundle = deliver(name, lambda files, pw: server_bundle(cfg, name, replica, files, pw),
                         docker_ha.secret_uploads(cfg, settings, ha_lay, replica, ha), [],
                         docker_patroni.cert_names(settings, replica) if ha_on else [])
        mounts = [docker.ContainerVolumeArgs(volume_name=volume.name, container_path=PGHOME),
                  *agent_volumes(bundle)]
        if not replica or ha_on:   # with Patroni, whichever container leads archives WAL
            mounts.append(docker.ContainerVolumeArgs(volume_name=backup_volume.name,
                                                     container_path=BACKUP_DIR))
        net = (docker_patroni.node_network(settings, network, host, replica) if ha_on else
               docker.ContainerNetworksAdvancedArgs(name=network.id, aliases=[host]))
        command = (docker_patroni.patroni_command(ha_lay) if ha_on else agent_command())
        return docker.Container(
            name, name=f"{layout.prefix}-{name}", image=image.image_id, hostname=host,
            envs=[f"PGDATA={PGDATA}", f"PGPORT={pg.port}", "NO_TS_TUNE=true",
                  f"PGPASSFILE={PASSFILE}"], volumes=mounts, networks_advanced=[net],
            ports=[docker.ContainerPortArgs(internal=pg.port, external=published,
                                            ip=BIND_ADDRESS)],
            healthcheck=healthcheck(pg.port), restart="unless-stopped", wait=True,
            wait_timeout=900, **command, opts=container_options(parent, depends))

    etcd = (docker_patroni.etcd_cluster(cfg, settings, prefix=layout.prefix, network=network,
                                        ca=ca, root=bundles_root, parent=parent)
            if ha_on else [])
    primary = server("primary", PRIMARY_HOST, pg.port, 0, list(etcd))
    # With Patroni the first container leads once it is healthy; the others clone it.
    replicas = [server(f"replica-{i}", layout.replica_host(i), layout.replica_port(i), i,
                       [primary, *etcd]) for i in range(1, cfg.replicas + 1)]
    proxy = ([docker_patroni.haproxy(cfg, settings, ha_lay, prefix=layout.prefix,
                                     network=network, ca=ca, depends=[primary, *replicas],
                                     parent=parent)] if ha_on else [])
    # With Patroni every direct DSN goes through HAProxy, which follows the leader.
    rw_port = cfg.ha.haproxy_port if ha_on else pg.port
    owner_dsn = client_dsn(rw_port, pg.owner_role, pws["owner"], pg.database, ca_file)
    servers_done = ContainersConverged(
        "containers-converged", stack=cfg.stack, status_dir=str(bundles_root),
        prefix=layout.prefix, versions=_collect(versions), dsn=owner_dsn,
        opts=pulumi.ResourceOptions(parent=parent,
                                    depends_on=[primary, *replicas, *proxy, ca_local]))
    # After the primary reported: its start script has made the stanza and a first full.
    backup_scheduler(cfg, primary, [primary, servers_done], parent)
    # After the database: a rotation's new verifiers are in it before PgBouncer's userlist.
    pooler_bundle_dir = deliver("pooler", lambda files, pw: pooler_bundle(cfg, files, pw), {},
                                [servers_done])
    pooler = docker.Container(
        "pooler", name=f"{layout.prefix}-pooler", image=pooler_image.image_id,
        volumes=agent_volumes(pooler_bundle_dir),
        networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.id,
                                                                aliases=["pooler"])],
        ports=[docker.ContainerPortArgs(internal=cfg.pooler.port, external=cfg.pooler.port,
                                        ip=BIND_ADDRESS)],
        # File descriptors for every client PgBouncer may accept (Docker's default: 1024).
        ulimits=[docker.ContainerUlimitArgs(name="nofile", soft=NOFILE, hard=NOFILE)],
        healthcheck=healthcheck(cfg.pooler.port), restart="unless-stopped", wait=True,
        wait_timeout=120, **agent_command(), opts=container_options(parent, [servers_done]))
    pooler_done = ContainersConverged(
        "pooler-converged", stack=cfg.stack, status_dir=str(bundles_root),
        prefix=layout.prefix, versions=_collect({"pooler": versions["pooler"]}),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[pooler]))
    containers = [primary, *replicas, pooler]      # in the order of `plain`
    replica_ports = ([cfg.ha.haproxy_port + 1] if ha_on and cfg.replicas else
                     [layout.replica_port(i) for i in range(1, cfg.replicas + 1)])

    def client(port: int, user: str, password: pulumi.Input[str],
               database: str = pg.database) -> pulumi.Output[str]:
        return client_dsn(port, user, password, database, ca_file)

    return Endpoints(
        primary_dsn=owner_dsn,
        app_dsn=client(rw_port, pg.app_role, pws["app"]),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(*[
            client(port, pg.app_role, pws["app"]) for port in replica_ports])),
        pooler_dsn=client(cfg.pooler.port, pg.app_role, pws["app"]),
        pooler_admin_dsn=client(cfg.pooler.port, cfg.pooler.admin_user, pws["pooler_admin"],
                                "pgbouncer"),
        ca_cert=ca.ca_cert,
        primary_id=primary.id,
        testinfra_hosts=pulumi.Output.all(*[c.name for c in containers]).apply(
            lambda names: testinfra_hosts(dict(zip(plain, names, strict=True)), plain)),
        ready=[primary, pooler, ca_local, servers_done, pooler_done],
        monitor_dsn=client(rw_port, roles.MONITOR, pws["monitor"]),
    )


def client_dsn(port: int, user: str, password: pulumi.Input[str], database: str,
               ca_file: str) -> pulumi.Output[str]:
    return dsn.output(host=BIND_ADDRESS, port=port, user=user, password=password,
                      dbname=database, sslmode="verify-full", sslrootcert=ca_file)


def _collect(versions: dict[str, pulumi.Output[str]]) -> pulumi.Output[dict[str, str]]:
    names = list(versions)
    return pulumi.Output.all(*versions.values()).apply(
        lambda v: dict(zip(names, v, strict=True)))


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
        return None  # pgBackRest runs in the primary's container: `remote_pgbackrest`

    def remote_pgbackrest(self, cfg: PlatformConfig) -> PgBackRest | None:
        """The primary container's pgBackRest, as the scheduler runs it."""
        return PgBackRest(config=Path(PGBACKREST_CONF), stanza=cfg.backup.stanza,
                          exec_prefix=tuple(exec_argv(f"{container_prefix(cfg)}-primary")))


BACKEND = DockerBackend()
