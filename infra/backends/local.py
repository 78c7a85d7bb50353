"""The local backend: PostgreSQL, replicas, PgBouncer and pgBackRest as processes here.

Each piece is a dynamic provider (local_postgres, local_replica, local_pooler,
local_backup); this module only wires rendered files and secrets between them.
Where things live is decided by local_layout.
"""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra import render
from infra.backends import Endpoints
from infra.backends.local_backup import Backup
from infra.backends.local_layout import ROOT, layout, replicas, state_dir
from infra.backends.local_pooler import Pooler
from infra.backends.local_postgres import PlatformDatabase, PostgresServer
from infra.backends.local_replica import Replica
from infra.config import PlatformConfig
from infra.passwords import Password

__all__ = ["ROOT", "build", "state_dir", "timescaledb_installed"]


def timescaledb_installed(version: int) -> bool:
    """Debian has no TimescaleDB package; a hand-installed one is used when present."""
    return Path(f"/usr/lib/postgresql/{version}/lib/timescaledb.so").exists()


def _dsn(host: str, port: int, user: str, password: pulumi.Input[str],
         database: str) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.format(
        "postgresql://{0}:{1}@{2}:{3}/{4}", user, password, host, port, database))


def build(cfg: PlatformConfig, parent: pulumi.Resource) -> Endpoints:
    """The primary, its database and roles, replicas, pooler and backups."""
    pg = cfg.postgres
    lay = layout(cfg)
    reps = replicas(cfg)  # validates the listen address before anything is made
    tsdb = timescaledb_installed(pg.version)
    child = pulumi.ResourceOptions(parent=parent)
    owner_pw = Password(f"{pg.owner_role}-password", opts=child)
    app_pw = Password(f"{pg.app_role}-password", opts=child)
    repl_pw = Password(f"{pg.replication_role}-password", opts=child)
    admin_pw = Password(f"{cfg.pooler.admin_user}-password", opts=child)
    paths = lay.primary_paths()
    hba = render.pg_hba_conf(cfg)
    server = PostgresServer("primary", {
        "data_dir": paths.data_dir,
        "socket_dir": paths.socket_dir,
        "host": pg.listen_address,
        "port": pg.port,
        "superuser": pg.owner_role,
        "superuser_password": owner_pw.value,
        "postgresql_conf": render.postgresql_conf(cfg, paths, timescaledb=tsdb),
        "pg_hba_conf": hba,
    }, child)
    database = PlatformDatabase("database", {
        "host": pg.listen_address,
        "port": pg.port,
        "data_dir": paths.data_dir,
        "superuser": pg.owner_role,
        "superuser_password": owner_pw.value,
        "database": pg.database,
        "app_role": pg.app_role,
        "app_password": app_pw.value,
        "replication_role": pg.replication_role,
        "replication_password": repl_pw.value,
    }, pulumi.ResourceOptions(parent=parent, depends_on=[server]))
    after_db = pulumi.ResourceOptions(parent=parent, depends_on=[server, database])

    backup = Backup("backup", {
        "stanza": cfg.backup.stanza,
        "config_path": str(lay.pgbackrest_conf),
        "pgbackrest_conf": render.pgbackrest_conf(cfg, paths, lay.backup_paths),
        "schedule_path": str(lay.backup_schedule),
        "schedule": render.backup_schedule(cfg, str(lay.pgbackrest_conf),
                                           passfile=str(lay.backup_passfile)),
        "passfile": str(lay.backup_passfile),
        **vars(lay.backup_paths),
        "pg_port": pg.port,
        "superuser": pg.owner_role,
        "superuser_password": owner_pw.value,
    }, after_db)

    replica_dsns = []
    for rep in reps:
        standby = render.Standby(primary_host=pg.listen_address, primary_port=pg.port,
                                 user=pg.replication_role, slot=rep.slot,
                                 passfile=str(rep.passfile))
        Replica(rep.name, {
            "data_dir": rep.paths.data_dir,
            "socket_dir": rep.paths.socket_dir,
            "host": rep.host,
            "port": rep.port,
            "slot": rep.slot,
            "passfile": str(rep.passfile),
            "primary_host": pg.listen_address,
            "primary_port": pg.port,
            "replication_role": pg.replication_role,
            "replication_password": repl_pw.value,
            "superuser": pg.owner_role,
            "superuser_password": owner_pw.value,
            "postgresql_conf": render.postgresql_conf(
                cfg, rep.paths, timescaledb=tsdb, port=rep.port, listen=rep.host,
                standby=standby),
            "pg_hba_conf": hba,
        }, after_db)
        replica_dsns.append(_dsn(rep.host, rep.port, pg.app_role, app_pw.value, pg.database))

    pooler_paths = lay.pooler_paths
    targets = render.PoolerTargets(
        listen_address=pg.listen_address, primary_host=pg.listen_address,
        primary_port=pg.port, replica_hosts=tuple(r.host for r in reps),
        replica_port=reps[0].port if reps else pg.port + 1)
    userlist = pulumi.Output.all(app_pw.value, admin_pw.value).apply(
        lambda pws: render.userlist_txt(render.pooler_users(cfg, pws[0], pws[1])))
    Pooler("pooler", {
        "ini_path": str(lay.pooler_dir / "pgbouncer.ini"),
        "pgbouncer_ini": render.pgbouncer_ini(cfg, pooler_paths, targets),
        "auth_file": pooler_paths.auth_file,
        "userlist": pulumi.Output.secret(userlist),
        "pid_file": pooler_paths.pid_file,
        "log_file": pooler_paths.log_file,
        "socket_dir": pooler_paths.socket_dir,
        "host": pg.listen_address,
        "port": cfg.pooler.port,
    }, after_db)

    return Endpoints(
        primary_dsn=_dsn(pg.listen_address, pg.port, pg.owner_role, owner_pw.value, pg.database),
        app_dsn=_dsn(pg.listen_address, pg.port, pg.app_role, app_pw.value, pg.database),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(*replica_dsns)),
        pooler_dsn=_dsn(pg.listen_address, cfg.pooler.port, pg.app_role, app_pw.value,
                        pg.database),
        primary_id=server.system_identifier,
        ready=[database, backup],
    )
