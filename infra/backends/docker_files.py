"""The dev containers' files and bundles: what each container converges to.

Config files are the shared renderings (infra/render), as on the local stack
and prod; secret-bearing ones (TLS keys, passfiles, PgBouncer's auth file,
patroni.yml, the roles SQL) join them only inside `Output.apply`, in each
container's bundle (infra/backends/docker_bundle.py), which stays a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra import render
from infra.backends import docker_bundle, docker_ha
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec
from infra.backends.base import slot_name
from infra.backends.cloud_files import inventory_entry
from infra.backends.host_bundle import (
    PATRONI_UNIT,
    PGBOUNCER_UNIT,
    POSTGRES_UNIT,
    reload_postgres,
)
from infra.config import DockerSettings, PlatformConfig
from infra.render.ha_hosts import HostLayout
from infra.render.passfile import pgpass
from infra.render.pooler import pooler_users, userlist_txt
from infra.render.roles_sql import bootstrap_script

BIND_ADDRESS = "127.0.0.1"          # published ports answer on loopback only
PGHOME = "/home/postgres/pgdata"    # the volume; the image's PGDATA is data/ below it
PGDATA = f"{PGHOME}/data"
BACKUP_DIR = f"{PGHOME}/backup"     # the backup volume, mounted inside the data volume
MARKS = f"{PGHOME}/.pg-platform"    # bootstrap progress, on the data volume
LOG_FILE = f"{PGHOME}/postgresql.log"
CONF_DIR = "/etc/pg-platform"
SOCKET_DIR = "/var/run/postgresql"
PGBACKREST_CONF = f"{CONF_DIR}/pgbackrest.conf"
START = f"{CONF_DIR}/start.sh"
PGBOUNCER_CTL = f"{CONF_DIR}/pgbouncer-ctl.sh"
PRIMARY_HOST = "primary"
PASSFILE = "/home/postgres/.pgpass"
POOLER_INI = f"{CONF_DIR}/pgbouncer.ini"
POOLER_PID = "/tmp/pgbouncer.pid"
AUTH_FILE = f"{CONF_DIR}/userlist.txt"
TLS_FILES = (f"{CONF_DIR}/tls/ca.crt", f"{CONF_DIR}/tls/server.crt",
             f"{CONF_DIR}/tls/server.key")
# pgp-apply writes the key as the server user's, 0600, where both servers read it.
SERVER_TLS = POOLER_TLS = render.TlsFiles(cert_file=TLS_FILES[1], key_file=TLS_FILES[2],
                                          ca_file=TLS_FILES[0])
# The server user's and 0600 in the bundle; never in the testinfra inventory.
SECRET_FILES = frozenset({PASSFILE, AUTH_FILE, TLS_FILES[2], f"{CONF_DIR}/patroni.yml"})
NOFILE = 65536      # PgBouncer's file limit: fixed, so no pool setting changes the container


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


def pooler_files(cfg: PlatformConfig, layout: Layout) -> dict[str, str]:
    """The PgBouncer container's non-secret files: its ini and its control script."""
    paths = render.PoolerPaths(auth_file=AUTH_FILE, socket_dir="/tmp", pid_file=POOLER_PID)
    targets = render.PoolerTargets(
        listen_address="*", primary_host=PRIMARY_HOST, primary_port=cfg.postgres.port,
        replica_hosts=tuple(layout.replica_host(i) for i in range(1, layout.replicas + 1)),
        replica_port=cfg.postgres.port)
    if docker_ha.enabled(cfg):
        # HAProxy sends the read-write pool to Patroni's leader and the read-only one to
        # the replicas, so PgBouncer follows a failover without a file change.
        port = cfg.ha.haproxy_port
        targets = render.PoolerTargets(listen_address="*", primary_host=docker_ha.HAPROXY_HOST,
                                       primary_port=port, replica_hosts=(docker_ha.HAPROXY_HOST,),
                                       replica_port=port + 1)
    return {POOLER_INI: render.pgbouncer_ini(cfg, paths, targets, POOLER_TLS),
            PGBOUNCER_CTL: render.render("docker-pgbouncer-ctl.sh.j2", pid_file=POOLER_PID,
                                         ini=POOLER_INI)}


def server_files(cfg: PlatformConfig, settings: DockerSettings,
                 replica: int = 0) -> dict[str, str]:
    """The non-secret files of one PostgreSQL container (replica 0 is the primary). With
    Patroni there is no start script (Patroni is the container's command) and every
    container has pgBackRest's config: whichever leads archives WAL to the backup volume."""
    if docker_ha.enabled(cfg):
        return {f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
                    cfg, host_paths(), timescaledb=True, listen="*", tls=SERVER_TLS),
                f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(
                    cfg, (settings.network_subnet,), ident_map=False, tls=True),
                PGBACKREST_CONF: render.pgbackrest_conf(cfg, host_paths(), backup_paths())}
    sb = standby(cfg, replica) if replica else None
    files = {
        f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
            cfg, host_paths(replica), timescaledb=True, listen="*", standby=sb,
            tls=SERVER_TLS),
        f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(cfg, (settings.network_subnet,),
                                                      ident_map=False, tls=True),
        START: render.render(
            "docker-start.sh.j2", role="replica" if replica else "primary", conf_dir=CONF_DIR,
            standby=sb, backup_dir="" if replica else BACKUP_DIR, bin_dir=bin_dir(cfg),
            log_file=LOG_FILE, marks=MARKS, config_path=PGBACKREST_CONF,
            stanza=cfg.backup.stanza),
    }
    if not replica:
        files[PGBACKREST_CONF] = render.pgbackrest_conf(cfg, host_paths(), backup_paths())
    return files


def bin_dir(cfg: PlatformConfig) -> str:
    return f"/usr/lib/postgresql/{cfg.postgres.version}/bin"


def server_bundle(cfg: PlatformConfig, name: str, replica: int, files: dict[str, str],
                  pw: CloudPasswords) -> str:
    """Container `name`'s bundle (`files`: every file but the passfile, secrets included)."""
    if docker_ha.enabled(cfg):
        return patroni_bundle(cfg, name, files, pw)
    pg = cfg.postgres
    files = dict(files)
    sql, slots = "", [slot_name(i) for i in range(1, cfg.replicas + 1)]
    if replica:
        files[PASSFILE] = pgpass([(PRIMARY_HOST, str(pg.port), "*", pg.replication_role,
                                   pw.replicator)])
        slots = []
    else:
        sql = bootstrap_script(bootstrap_spec(cfg, pw))
    reload = reload_postgres()
    then = {path: reload for path in (f"{CONF_DIR}/postgresql.conf", f"{CONF_DIR}/pg_hba.conf",
                                      *TLS_FILES)}
    return docker_bundle.container_bundle(
        name, files, private=SECRET_FILES, then=then,
        services=docker_bundle.postgres_services(POSTGRES_UNIT, bin_dir=bin_dir(cfg),
                                                 data_dir=PGDATA, start_script=START,
                                                 log_file=LOG_FILE),
        postgres={"unit": POSTGRES_UNIT, "socket_dir": SOCKET_DIR, "port": pg.port,
                  "os_user": docker_bundle.OS_USER},
        sql=sql, slots=slots)


def patroni_bundle(cfg: PlatformConfig, name: str, files: dict[str, str],
                   pw: CloudPasswords) -> str:
    """A Patroni container's bundle: the roles SQL on every node (it runs where the node
    leads), no slots (Patroni's) and no service commands: Patroni is the container's main
    process, and the applier reloads it through its REST API (`supervisor: container`)."""
    lay = patroni_layout(cfg)
    reload = (f"reload:{PATRONI_UNIT}",)
    then = {path: reload for path in (lay.patroni_yml, *TLS_FILES)}
    return docker_bundle.container_bundle(
        name, files, private=SECRET_FILES, then=then, services={},
        postgres={"unit": POSTGRES_UNIT, "socket_dir": SOCKET_DIR, "port": cfg.postgres.port,
                  "os_user": docker_bundle.OS_USER},
        sql=bootstrap_script(bootstrap_spec(cfg, pw)),
        patroni={**docker_ha.applier_spec(cfg, lay), "first_backup": {
            # infra/hostagent/first_backup.py, on whichever container leads first; marked
            # on the shared backup volume, so the cluster does it once.
            "config": PGBACKREST_CONF, "stanza": cfg.backup.stanza,
            "marks": f"{BACKUP_DIR}/.pg-platform", "os_user": docker_bundle.OS_USER}})


def patroni_layout(cfg: PlatformConfig) -> HostLayout:
    """Where each Patroni container keeps Patroni's files (the same in every one)."""
    return docker_ha.ha_layout(cfg, cfg.docker or DockerSettings(), conf_dir=CONF_DIR,
                               data_dir=PGDATA, socket_dir=SOCKET_DIR,
                               pgbackrest_config=PGBACKREST_CONF, home=PGHOME, tls=SERVER_TLS)


def pooler_bundle(cfg: PlatformConfig, files: dict[str, str], pw: CloudPasswords) -> str:
    """The PgBouncer container's bundle: no PostgreSQL; a changed file reloads PgBouncer."""
    files = {**files, AUTH_FILE: userlist_txt(pooler_users(cfg, pw.app, pw.pooler_admin))}
    reload = (f"reload:{PGBOUNCER_UNIT}",)
    return docker_bundle.container_bundle(
        "pooler", files, private=SECRET_FILES,
        then={path: reload for path in (POOLER_INI, AUTH_FILE, *TLS_FILES)},
        services=docker_bundle.pooler_services(PGBOUNCER_UNIT, PGBOUNCER_CTL),
        enable=[PGBOUNCER_UNIT])


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
