"""The local backend: PostgreSQL, replicas, PgBouncer and pgBackRest as processes here.

Each piece is a dynamic provider (local_postgres, local_replica, local_pooler,
local_backup); this module only wires rendered files and secrets between them.
Where things live is decided by local_layout. The *_props functions accept
plain strings as well as Outputs for the secrets, so the integration tests hand
the providers exactly the inputs `pulumi up` does.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pulumi

from infra import dsn, hostctl, render, roles
from infra.backends import local_exporters, local_patroni, rendered_checks, tenant_users
from infra.backends.base import Endpoints, LocalFiles
from infra.backends.cloud_files import inventory_entry
from infra.backends.local_backup import Backup
from infra.backends.local_backup_scheduler import BackupScheduler, scheduler_props
from infra.backends.local_ha_layout import ha_layout
from infra.backends.local_ha_layout import nodes as ha_nodes
from infra.backends.local_jobrunner import JobRunner
from infra.backends.local_layout import ROOT, ReplicaLayout, layout, replicas, state_dir
from infra.backends.local_passwords import local_passwords
from infra.backends.local_pooler import Pooler
from infra.backends.local_postgres import PlatformDatabase, PostgresServer
from infra.backends.local_replica import Replica
from infra.config import PlatformConfig
from infra.errors import ConfigError
from infra.hostctl.pgbackrest import PgBackRest
from infra.timescaledb.presence import installed as timescaledb_files_installed
from infra.tls import TlsCertificates, TlsFiles

__all__ = ["BACKEND", "ROOT", "build", "state_dir", "timescaledb_installed"]


def timescaledb_installed(version: int) -> bool:
    """Debian has no TimescaleDB package; scripts/bootstrap installs or builds it."""
    return timescaledb_files_installed(version)


def _dsn(host: str, port: int, user: str, password: pulumi.Input[str],
         database: str, ca_file: str) -> pulumi.Output[str]:
    """Clients verify the server's certificate and name against the stack's CA."""
    return dsn.output(host=host, port=port, user=user, password=password, dbname=database,
                      sslmode="verify-full", sslrootcert=ca_file)


def service_os_user() -> str:
    """The OS user servers and pgBackRest run as (pg_ident.conf maps it to break-glass)."""

    return hostctl.SERVICE_USER if hostctl.as_service_user() else getpass.getuser()


def primary_props(cfg: PlatformConfig, superuser_pw: Any, tls: render.TlsFiles | None = None,
                  timescaledb: bool | None = None) -> dict[str, Any]:
    """The primary; its superuser is the break-glass one (roles.BREAK_GLASS), never the owner.

    `timescaledb` None preloads TimescaleDB where it is installed (tests choose).
    """
    pg, paths = cfg.postgres, layout(cfg).primary_paths()
    if timescaledb is None:
        timescaledb = timescaledb_installed(pg.version)
    return {
        "allow_data_loss": cfg.allow_data_loss,
        "data_dir": paths.data_dir,
        "socket_dir": paths.socket_dir,
        "host": pg.listen_address,
        "port": pg.port,
        "superuser": roles.BREAK_GLASS,
        "superuser_password": superuser_pw,
        "postgresql_conf": render.postgresql_conf(
            cfg, paths, timescaledb=timescaledb, tls=tls),
        "pg_hba_conf": render.pg_hba_conf(cfg),
        "pg_ident_conf": render.pg_ident_conf(
            service_os_user(), *(["root"] if hostctl.as_service_user() else [])),
    }


def database_props(cfg: PlatformConfig, superuser_pw: Any, app_pw: Any, repl_pw: Any, *,
                   owner_pw: Any, monitor_pw: Any = None,
                   tenant_admin_pw: Any = None, pooler_auth_pw: Any = None) -> dict[str, Any]:
    """The bootstrap step's inputs: every role with one job (infra/roles.py)."""
    pg = cfg.postgres
    props = {
        "host": pg.listen_address,
        "port": pg.port,
        "allow_data_loss": cfg.allow_data_loss,
        "data_dir": layout(cfg).primary_paths().data_dir,
        "superuser": roles.BREAK_GLASS,
        "superuser_password": superuser_pw,
        "database": pg.database,
        "owner_role": pg.owner_role,
        "owner_password": owner_pw,
        "app_role": pg.app_role,
        "app_password": app_pw,
        "replication_role": pg.replication_role,
        "replication_password": repl_pw,
    }
    if monitor_pw is not None:
        props.update(monitor_role=roles.MONITOR, monitor_password=monitor_pw)
    if tenant_admin_pw is not None:
        props.update(tenant_admin_role=roles.TENANT_ADMIN, tenant_admin_password=tenant_admin_pw)
    if pooler_auth_pw is not None:
        props.update(pooler_auth_role=roles.POOLER_AUTH, pooler_auth_password=pooler_auth_pw)
    return props


def backup_props(cfg: PlatformConfig, owner_pw: Any = None) -> dict[str, Any]:
    """pgBackRest reaches the primary on its socket as break-glass (peer): no password."""
    lay = layout(cfg)
    return {
        "stanza": cfg.backup.stanza,
        "allow_data_loss": cfg.allow_data_loss,
        "config_path": str(lay.pgbackrest_conf),
        "pgbackrest_conf": render.pgbackrest_conf(cfg, lay.primary_paths(), lay.backup_paths),
        "schedule_path": str(lay.backup_schedule),
        "schedule": render.backup_schedule(cfg, str(lay.pgbackrest_conf)),
        **vars(lay.backup_paths),
        "pg_port": cfg.postgres.port,
        "superuser": roles.BREAK_GLASS,
        "superuser_password": None,
        "restores_dir": str(lay.restores),
    }


def backup_scheduler_props(cfg: PlatformConfig) -> dict[str, Any]:
    """The supervised scheduler of full, diff and incr backups (a host's systemd timers)."""
    lay, sched = layout(cfg), cfg.backup.schedule
    return scheduler_props(
        config_path=str(lay.pgbackrest_conf), stanza=cfg.backup.stanza,
        schedule={"full": sched.full, "diff": sched.diff, "incr": sched.incr},
        run_dir=str(lay.pgbackrest_dir / "scheduler"), log_path=lay.backup_paths.log_path)


def replica_props(cfg: PlatformConfig, rep: ReplicaLayout, superuser_pw: Any,
                  repl_pw: Any, tls: render.TlsFiles | None = None,
                  timescaledb: bool | None = None) -> dict[str, Any]:
    pg = cfg.postgres
    if timescaledb is None:
        timescaledb = timescaledb_installed(pg.version)
    standby = render.Standby(primary_host=pg.listen_address, primary_port=pg.port,
                             user=pg.replication_role, slot=rep.slot,
                             passfile=str(rep.passfile),
                             sslrootcert=tls.ca_file if tls else None)
    return {
        "data_dir": rep.paths.data_dir,
        "socket_dir": rep.paths.socket_dir,
        "host": rep.host,
        "port": rep.port,
        "slot": rep.slot,
        "primary_host": pg.listen_address,
        "primary_port": pg.port,
        "replication_role": pg.replication_role,
        "replication_password": repl_pw,
        "passfile": str(rep.passfile),
        "superuser": roles.BREAK_GLASS,
        "superuser_password": superuser_pw,
        "postgresql_conf": render.postgresql_conf(
            cfg, rep.paths, timescaledb=timescaledb, port=rep.port,
            listen=rep.host, standby=standby, tls=tls),
        "pg_hba_conf": render.pg_hba_conf(cfg),
    }


def pooler_props(cfg: PlatformConfig, userlist: Any,
                 tls: render.TlsFiles | None = None) -> dict[str, Any]:
    """`userlist` is the rendered auth file (tenant_users.auth_file): verifiers, and the
    password of PgBouncer's auth_user, through which every tenant role is looked up."""
    pg, lay, reps = cfg.postgres, layout(cfg), replicas(cfg)
    paths = lay.pooler_paths
    targets = render.PoolerTargets(
        listen_address=pg.listen_address, primary_host=pg.listen_address,
        primary_port=pg.port, replica_hosts=tuple(r.host for r in reps),
        replica_port=reps[0].port if reps else pg.port + 1)
    return {
        "ini_path": str(lay.pooler_dir / "pgbouncer.ini"),
        "pgbouncer_ini": render.pgbouncer_ini(cfg, paths, targets, tls,
                                              auth_user=roles.POOLER_AUTH),
        "auth_file": paths.auth_file,
        "userlist": userlist,
        "pid_file": paths.pid_file,
        "log_file": paths.log_file,
        "socket_dir": paths.socket_dir,
        "host": pg.listen_address,
        "port": cfg.pooler.port,
    }


def refuse_manager_switch(cfg: PlatformConfig) -> None:
    """A cluster the other manager made is in the state dir: switching `ha.manager` would
    delete its resources, data directory included, and start an empty cluster."""
    patroni = cfg.ha.manager == "patroni"
    other = layout(cfg).base / ("primary" if patroni else ha_nodes(cfg)[0].name)
    if (other / "PG_VERSION").exists() and not cfg.allow_data_loss:
        made_by = "none" if patroni else "patroni"
        raise ConfigError(
            f"pg-platform:ha.manager={cfg.ha.manager}: the stack's cluster in {other} was made "
            f"with ha.manager={made_by}, and switching would delete it with its data; keep "
            f"{made_by}, or back up, `pulumi destroy` and `up` again (or set "
            "pg-platform:allow_data_loss: true to let the switch delete it)")


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """The primary, its database and roles, replicas, pooler and backups."""
    refuse_manager_switch(cfg)
    if cfg.ha.manager == "patroni":
        return local_patroni.build(cfg, parent, timescaledb_installed(cfg.postgres.version),
                                   database_props, backup_scheduler_props)
    pg = cfg.postgres
    reps = replicas(cfg)  # validates the listen address before anything is made
    for node, files in plain_files(cfg, layout(cfg).tls).items():
        rendered_checks.check_files(cfg, node, files)
    child = pulumi.ResourceOptions(parent=parent)
    # Break-glass (the bootstrap step and the providers; superuser_dsn) and the roles, whose
    # rotated passwords reach ALTER ROLE (with a verifier), the pooler's auth file, the
    # replicas' passfiles and the outputs in place.
    (super_pw, owner_pw, app_pw, repl_pw, monitor_pw, tadmin_pw, pooler_auth_pw, admin_pw,
     tenant_key) = local_passwords(cfg, child)
    # One CA and one server certificate naming every address clients dial (infra/tls.py).
    tls = layout(cfg).tls
    hosts = [pg.listen_address, *(r.host for r in reps), "localhost"]
    if len(reps) > 1:  # the read-only pool's host list, as PgBouncer 1.18 checks it
        hosts.append(",".join(r.host for r in reps))
    certs = TlsCertificates("tls", hosts, opts=child)
    tls_files = TlsFiles("tls-files", cert_file=tls.cert_file, key_file=tls.key_file,
                         ca_file=tls.ca_file, certs=certs, opts=child)
    server = PostgresServer("primary", primary_props(cfg, super_pw, tls),
                            pulumi.ResourceOptions(parent=parent, depends_on=[tls_files]))
    database = PlatformDatabase("database", database_props(
        cfg, super_pw, app_pw, repl_pw, owner_pw=owner_pw, monitor_pw=monitor_pw,
        tenant_admin_pw=tadmin_pw, pooler_auth_pw=pooler_auth_pw),
        pulumi.ResourceOptions(parent=parent, depends_on=[server]))
    after_db = pulumi.ResourceOptions(parent=parent, depends_on=[server, database])
    backup = Backup("backup", backup_props(cfg), after_db)
    BackupScheduler("backup-scheduler", backup_scheduler_props(cfg),
                    pulumi.ResourceOptions(parent=parent, depends_on=[backup]))
    standbys = [Replica(rep.name, replica_props(cfg, rep, super_pw, repl_pw, tls), after_db)
                for rep in reps]
    userlist = pulumi.Output.all(app_pw, admin_pw, tadmin_pw, pooler_auth_pw).apply(
        lambda pws: tenant_users.auth_file(cfg, *pws))
    pooler = Pooler("pooler", pooler_props(cfg, pulumi.Output.secret(userlist), tls), after_db)
    # Prometheus exporters for every node, the pooler and the backups (pg-platform:monitoring),
    # as roles.MONITOR (pg_monitor only).
    local_exporters.build(cfg, monitor_password=monitor_pw, admin_password=admin_pw,
                          sql_dir=Path.cwd() / "sql", opts=pulumi.ResourceOptions(
                              parent=parent, depends_on=[database, backup, pooler, *standbys]))
    ca = tls.ca_file
    owner_dsn = _dsn(pg.listen_address, pg.port, pg.owner_role, owner_pw, pg.database, ca)
    if timescaledb_installed(pg.version) and cfg.timescaledb.job_runner != "scheduler":
        # pg-platform's TimescaleDB job runner (infra/timescaledb/jobs.py).
        JobRunner("timescaledb-job-runner", dsn=owner_dsn,
                  run_dir=str(layout(cfg).base / "jobrunner"),
                  mode=cfg.timescaledb.job_runner, opts=after_db)
    return Endpoints(
        primary_dsn=owner_dsn,
        app_dsn=_dsn(pg.listen_address, pg.port, pg.app_role, app_pw, pg.database, ca),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(
            *[_dsn(r.host, r.port, pg.app_role, app_pw, pg.database, ca) for r in reps])),
        pooler_dsn=_dsn(pg.listen_address, cfg.pooler.port, pg.app_role, app_pw, pg.database,
                        ca),
        pooler_admin_dsn=_dsn(pg.listen_address, cfg.pooler.port, cfg.pooler.admin_user,
                              admin_pw, "pgbouncer", ca),
        ca_cert=certs.ca_cert,
        testinfra_hosts=pulumi.Output.from_input(testinfra_hosts(cfg, tls)),
        primary_id=server.system_identifier,
        ready=[database, backup],
        superuser_dsn=_dsn(pg.listen_address, pg.port, roles.BREAK_GLASS, super_pw,
                           pg.database, ca),
        monitor_dsn=_dsn(pg.listen_address, pg.port, roles.MONITOR, monitor_pw, pg.database, ca),
        tenant_admin_dsn=_dsn(pg.listen_address, cfg.pooler.port, roles.TENANT_ADMIN, tadmin_pw,
                              pg.database, ca),
        tenant_key=pulumi.Output.secret(tenant_key),
    )


def plain_files(cfg: PlatformConfig, tls: render.TlsFiles) -> dict[str, dict[str, str]]:
    """The server files each node receives, by path (none holds a password)."""
    unused = "not-a-password"
    primary, backup = primary_props(cfg, unused, tls), backup_props(cfg, unused)
    pooler = pooler_props(cfg, unused, tls)
    out = {"primary": {f"{primary['data_dir']}/postgresql.conf": primary["postgresql_conf"],
                       backup["config_path"]: backup["pgbackrest_conf"]},
           "pooler": {pooler["ini_path"]: pooler["pgbouncer_ini"]}}
    for rep in replicas(cfg):
        props = replica_props(cfg, rep, unused, unused, tls)
        out[rep.name] = {f"{props['data_dir']}/postgresql.conf": props["postgresql_conf"]}
    return out


def testinfra_hosts(cfg: PlatformConfig, tls: render.TlsFiles) -> list[dict[str, Any]]:
    """The local hosts in the `testinfra_hosts` format, with the non-secret files only.

    The suite derives the local inventory from this function (tests/infra/inventory.py,
    which adds the auth file); the output gives every backend the same shape.
    """
    unused = "not-a-password"  # the files below never contain a password
    user = service_os_user()
    primary = primary_props(cfg, unused, tls)
    backup = backup_props(cfg, unused)
    pooler = pooler_props(cfg, unused, tls)
    hosts = [inventory_entry("primary", "primary", "local://", {
        f"{primary['data_dir']}/postgresql.conf": primary["postgresql_conf"],
        f"{primary['data_dir']}/pg_hba.conf": primary["pg_hba_conf"],
        backup["config_path"]: backup["pgbackrest_conf"],
        backup["schedule_path"]: backup["schedule"]},
        service_user=user, data_dir=primary["data_dir"],
        address=f"{primary['host']}:{primary['port']}",
        pgbackrest_config=backup["config_path"])]
    for rep in replicas(cfg):
        props = replica_props(cfg, rep, unused, unused, tls)
        hosts.append(inventory_entry(rep.name, "replica", "local://", {
            f"{props['data_dir']}/postgresql.conf": props["postgresql_conf"],
            f"{props['data_dir']}/pg_hba.conf": props["pg_hba_conf"]},
            service_user=user, data_dir=props["data_dir"],
            address=f"{props['host']}:{props['port']}"))
    hosts.append(inventory_entry("pooler", "pooler", "local://", {
        pooler["ini_path"]: pooler["pgbouncer_ini"]},
        service_user=user, pooler_ini=pooler["ini_path"], auth_file=pooler["auth_file"]))
    return hosts


class LocalBackend:
    """Processes on this machine, from the PostgreSQL versions installed here."""

    name = "local"

    def versions(self, cfg: PlatformConfig) -> tuple[int, ...]:
        return hostctl.installed_versions()

    def build(self, cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
        return build(cfg, parent)

    def local_files(self, cfg: PlatformConfig) -> LocalFiles | None:
        lay = layout(cfg)
        if cfg.ha.manager == "patroni":
            ha = ha_layout(cfg)
            return LocalFiles(pgbackrest_config=lay.pgbackrest_conf, restores_dir=lay.restores,
                              patroni_configs=tuple(ha.config_file(n.name)
                                                    for n in ha_nodes(cfg)),
                              haproxy_socket=ha.haproxy_dir / "stats.sock")
        return LocalFiles(pgbackrest_config=lay.pgbackrest_conf, restores_dir=lay.restores)

    def remote_pgbackrest(self, cfg: PlatformConfig) -> PgBackRest | None:
        return None  # `local_files` has it


BACKEND = LocalBackend()
