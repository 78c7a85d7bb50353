"""The local backend with `ha.manager: patroni`: etcd, Patroni members, HAProxy and
PgBouncer, wired from the same settings and renderers as the hand-supervised path.

Clients never dial a node: `primary_dsn` and `app_dsn` go to HAProxy's
read-write port, which follows Patroni's leader (/primary checks), `replica_dsns`
to its read-only port (/replica checks), and PgBouncer pools through both. A
failover or switchover therefore changes no DSN and no pgbouncer.ini.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi

from infra import dsn, hostctl, render, roles
from infra.backends import local_exporters, local_fence, rendered_checks, tenant_users
from infra.backends.base import Endpoints
from infra.backends.cloud_files import inventory_entry
from infra.backends.local_backup import Backup
from infra.backends.local_backup_scheduler import BackupScheduler
from infra.backends.local_ha import DynamicConfig, Etcd, Member, Proxy
from infra.backends.local_ha_layout import etcd, ha_layout, nodes, tls_hosts
from infra.backends.local_jobrunner import JobRunner
from infra.backends.local_layout import layout
from infra.backends.local_passwords import local_passwords
from infra.backends.local_pooler import Pooler
from infra.backends.local_postgres import PlatformDatabase
from infra.config import PlatformConfig
from infra.hostctl.etcd import LocalMember
from infra.passwords import Password
from infra.render import patroni as render_ha
from infra.tls import TlsCertificates, TlsFiles

# infra.backends.local.database_props: (cfg, superuser, app, replication, *, owner_pw,
# monitor_pw, tenant_admin_pw, pooler_auth_pw) -> the Database resource's inputs.
DatabaseProps = Callable[..., dict[str, Any]]
# infra.backends.local.backup_scheduler_props: (cfg) -> the BackupScheduler's inputs.
SchedulerProps = Callable[[PlatformConfig], dict[str, Any]]


def _tls_props(tls: render.TlsFiles) -> dict[str, str]:
    return {"cert_file": tls.cert_file, "key_file": tls.key_file, "ca_file": tls.ca_file}


def etcd_props(cfg: PlatformConfig, tls: render.TlsFiles) -> dict[str, Any]:
    members, lay = etcd(cfg), ha_layout(cfg)
    return {"members": [{
        "name": m.name, "host": m.host, "client_port": m.client_port,
        "peer_port": m.peer_port, "base": str(lay.etcd_dir / m.name),
        "config": render_ha.etcd_conf(cfg, m, members, str(lay.etcd_dir / m.name / "data"),
                                      tls)} for m in members], **_tls_props(tls)}


def member_props(cfg: PlatformConfig, node: render_ha.PatroniNode, secrets: Any,
                 tls: render.TlsFiles, timescaledb: bool) -> dict[str, Any]:
    """`secrets` is an Output (or, in tests, a plain) render_ha.HaSecrets."""
    text = pulumi.Output.from_input(secrets).apply(
        lambda s: render_ha.patroni_yml(cfg, node, etcd(cfg), s, timescaledb=timescaledb,
                                        tls=tls, ident_users=ident_users(),
                                        stanza_at_bootstrap=True)) \
        if isinstance(secrets, pulumi.Output) else \
        render_ha.patroni_yml(cfg, node, etcd(cfg), secrets, timescaledb=timescaledb, tls=tls,
                              ident_users=ident_users(), stanza_at_bootstrap=True)
    return {"name": node.name, "host": node.host, "port": node.port,
            "restapi_port": node.restapi_port,
            "config_file": str(ha_layout(cfg).config_file(node.name)),
            "data_dir": node.paths.data_dir, "socket_dir": node.paths.socket_dir,
            "patroni_yml": pulumi.Output.secret(text) if isinstance(text, pulumi.Output)
            else text, "backup_files": member_backup_files(cfg), **_tls_props(tls)}


def member_backup_files(cfg: PlatformConfig) -> dict[str, Any]:
    """What a member writes before its first start (local_ha._write_backup_files): each
    node's archive_command, and the bootstrap's stanza-create, need pgbackrest.conf (the
    Backup resource, which keeps it afterwards, waits for the leader)."""
    backup_in = backup_props(cfg)
    return {k: backup_in[k] for k in ("config_path", "pgbackrest_conf", "stanza", "repo_path",
                                      "log_path", "lock_path", "spool_path")}


def fence_props(cfg: PlatformConfig, members: list[dict[str, Any]],
                tls: render.TlsFiles) -> dict[str, Any]:
    """The dead-leader fence (infra/hostctl/fence.py) over these members' keys."""
    return local_fence.fence_props(
        prefix=f"{render_ha.NAMESPACE.rstrip('/')}/pg-platform-{cfg.stack}",
        endpoints=[m.client_url for m in etcd(cfg)], tls=tls,
        members=[(m["name"], m["config_file"], m["data_dir"]) for m in members],
        run_dir=str(ha_layout(cfg).base / "fence"))


def proxy_props(cfg: PlatformConfig, tls: render.TlsFiles) -> dict[str, Any]:
    d = ha_layout(cfg).haproxy_dir
    targets = render_ha.ProxyTargets(cfg.postgres.listen_address, cfg.ha.haproxy_port,
                                      str(d / "stats.sock"))
    return {"config_file": str(d / "haproxy.cfg"), "stats_socket": targets.stats_socket,
            "host": targets.listen_address, "port": targets.port,
            "haproxy_cfg": render_ha.haproxy_cfg(nodes(cfg), targets, tls)}


def dynamic_config_props(cfg: PlatformConfig, members: list[dict[str, Any]],
                         tls: render.TlsFiles, timescaledb: bool) -> dict[str, Any]:
    dcs = render_ha.dynamic_config(cfg, nodes(cfg)[0], timescaledb=timescaledb, tls=tls)
    return {"scope": f"pg-platform-{cfg.stack}", "dcs": json.dumps(dcs, sort_keys=True),
            "members": [{k: m[k] for k in ("name", "host", "restapi_port", "config_file",
                                           "data_dir", "cert_file", "key_file", "ca_file")}
                        for m in members]}


def pooler_props(cfg: PlatformConfig, userlist: Any, tls: render.TlsFiles) -> dict[str, Any]:
    """PgBouncer pools through HAProxy; tenants are looked up through its auth_user
    (infra/render/pooler_auth.py), whose auth_query reaches the leader the same way."""
    lay, pg = layout(cfg), cfg.postgres
    paths = lay.pooler_paths
    targets = render.PoolerTargets(
        listen_address=pg.listen_address, primary_host=pg.listen_address,
        primary_port=cfg.ha.haproxy_port,
        replica_hosts=(pg.listen_address,) if cfg.replicas else (),
        replica_port=cfg.ha.haproxy_port + 1)
    return {"ini_path": str(lay.pooler_dir / "pgbouncer.ini"),
            "pgbouncer_ini": render.pgbouncer_ini(cfg, paths, targets, tls,
                                                  auth_user=roles.POOLER_AUTH),
            "auth_file": paths.auth_file, "userlist": userlist, "pid_file": paths.pid_file,
            "log_file": paths.log_file, "socket_dir": paths.socket_dir,
            "host": pg.listen_address, "port": cfg.pooler.port}


def backup_props(cfg: PlatformConfig) -> dict[str, Any]:
    """The hand-supervised path's Backup resource, with every node in pgbackrest.conf.

    pgBackRest reaches each node on its socket as break-glass by peer (pg_ident map):
    no password in its environment or any file."""
    lay, (first, *others) = layout(cfg), nodes(cfg)
    return {
        "stanza": cfg.backup.stanza,
        "allow_data_loss": cfg.allow_data_loss,
        "config_path": str(lay.pgbackrest_conf),
        "pgbackrest_conf": render.pgbackrest_conf(cfg, first.paths, lay.backup_paths,
                                                  others=tuple(n.paths for n in others)),
        "schedule_path": str(lay.backup_schedule),
        "schedule": render.backup_schedule(cfg, str(lay.pgbackrest_conf)),
        **vars(lay.backup_paths),
        "pg_port": cfg.postgres.port,
        "superuser": roles.BREAK_GLASS,
        "superuser_password": None,
        "restores_dir": str(lay.restores),
    }


def ident_users() -> tuple[str, ...]:
    """OS users pg_ident.conf maps to break-glass: the service user (and root when the
    deploy runs as root), as on the hand-supervised path."""
    if hostctl.as_service_user():
        return (hostctl.SERVICE_USER, "root")
    return (getpass.getuser(),)


def _dsn(host: str, port: int, user: str, password: pulumi.Input[str], database: str,
         ca_file: str) -> pulumi.Output[str]:
    return dsn.output(host=host, port=port, user=user, password=password, dbname=database,
                      sslmode="verify-full", sslrootcert=ca_file)


def build(cfg: PlatformConfig, parent: pulumi.Resource, timescaledb: bool,
          database_props: DatabaseProps, scheduler_props: SchedulerProps) -> Endpoints:
    """`database_props` and `scheduler_props` are the hand-supervised path's
    (infra/backends/local.py), so both paths make the same roles with one job each
    (infra/roles.py) and schedule the same backups."""
    pg, ha = cfg.postgres, cfg.ha
    # The files PgBouncer and pgBackRest get go past the real tools first (as on the
    # hand-supervised path); HAProxy checks its own (haproxy -c) before it starts.
    pooler_in, backup_in = pooler_props(cfg, "", layout(cfg).tls), backup_props(cfg)
    rendered_checks.check_files(cfg, "pooler", {pooler_in["ini_path"]:
                                                pooler_in["pgbouncer_ini"]})
    rendered_checks.check_files(cfg, "backup", {backup_in["config_path"]:
                                                backup_in["pgbackrest_conf"]})
    child = pulumi.ResourceOptions(parent=parent)
    # Break-glass is Patroni's superuser and pg_rewind user, and the bootstrap step's.
    (super_pw, owner_pw, app_pw, repl_pw, monitor_pw, tadmin_pw, pooler_auth_pw, admin_pw,
     tenant_key) = local_passwords(cfg, child)
    rest_pw = Password("patroni-restapi-password", rotation=cfg.rotation, opts=child).value
    tls = layout(cfg).tls
    certs = TlsCertificates("tls", tls_hosts(cfg), opts=child)
    tls_files = TlsFiles("tls-files", cert_file=tls.cert_file, key_file=tls.key_file,
                         ca_file=tls.ca_file, certs=certs, opts=child)
    dcs = Etcd("etcd", etcd_props(cfg, tls),
               pulumi.ResourceOptions(parent=parent, depends_on=[tls_files]))
    secrets = pulumi.Output.all(super_pw, repl_pw, rest_pw).apply(
        lambda s: render_ha.HaSecrets(s[0], s[1], s[2]))
    first, *others = nodes(cfg)
    props = [member_props(cfg, n, secrets, tls, timescaledb) for n in (first, *others)]
    on_etcd = pulumi.ResourceOptions(parent=parent, depends_on=[dcs])
    leader = Member(first.name, props[0], on_etcd)
    # The others start beside it, each once the first holds the cluster's initialize key
    # (MemberProvider.create): Patroni's own start-up overlaps the first node's initdb,
    # and they clone it as soon as it leads, as Patroni nodes started together do.
    rest = [Member(n.name, {**p, "join": True}, on_etcd)
            for n, p in zip(others, props[1:], strict=True)]
    members = [leader, *rest]
    # After the members, so `destroy` stops it before them (docs/ha.md, "The fence").
    local_fence.Fence("fence", fence_props(cfg, props, tls),
                      pulumi.ResourceOptions(parent=parent, depends_on=members))
    DynamicConfig("patroni-config", dynamic_config_props(cfg, props, tls, timescaledb),
                  pulumi.ResourceOptions(parent=parent, depends_on=members))
    # What needs only the leader waits only for it: the replicas clone themselves (a few
    # seconds of pg_basebackup each) while HAProxy, the roles, the first backup and the
    # SQL go ahead. HAProxy marks a node up within one check of Patroni answering for it.
    on_leader = pulumi.ResourceOptions(parent=parent, depends_on=[leader])
    proxy = Proxy("haproxy", proxy_props(cfg, tls), on_leader)
    # The bootstrap step reaches whichever node leads through HAProxy's read-write port.
    database = PlatformDatabase("database", {
        **database_props(cfg, super_pw, app_pw, repl_pw, owner_pw=owner_pw,
                         monitor_pw=monitor_pw, tenant_admin_pw=tadmin_pw,
                         pooler_auth_pw=pooler_auth_pw),
        "port": ha.haproxy_port, "data_dir": first.paths.data_dir},
        pulumi.ResourceOptions(parent=parent, depends_on=[proxy]))
    after_db = pulumi.ResourceOptions(parent=parent, depends_on=[database])
    # pgBackRest logs in as break-glass by peer on the leader's socket, which Patroni's
    # bootstrap made: the stanza and first backup need no role of the bootstrap step.
    backup = Backup("backup", backup_props(cfg), on_leader)
    BackupScheduler("backup-scheduler", scheduler_props(cfg),
                    pulumi.ResourceOptions(parent=parent, depends_on=[backup]))
    userlist = pulumi.Output.all(app_pw, admin_pw, tadmin_pw, pooler_auth_pw).apply(
        lambda pws: tenant_users.auth_file(cfg, *pws))
    pooler = Pooler("pooler", pooler_props(cfg, pulumi.Output.secret(userlist), tls), after_db)
    # One postgres exporter per member (each dials its own node, whatever its role), the
    # pooler's and the backup collector, as roles.MONITOR (pg_monitor only).
    local_exporters.build(cfg, monitor_password=monitor_pw, admin_password=admin_pw,
                          sql_dir=Path.cwd() / "sql", nodes=[(n.name, n.host, n.port)
                                                             for n in (first, *others)],
                          opts=pulumi.ResourceOptions(parent=parent, depends_on=[
                              database, backup, pooler, *members]))
    ca, host = tls.ca_file, pg.listen_address
    owner_dsn = _dsn(host, ha.haproxy_port, pg.owner_role, owner_pw, pg.database, ca)
    if timescaledb and cfg.timescaledb.job_runner != "scheduler":
        # The job runner dials HAProxy too, so it follows the leader (infra/timescaledb).
        JobRunner("timescaledb-job-runner", dsn=owner_dsn,
                  run_dir=str(layout(cfg).base / "jobrunner"),
                  mode=cfg.timescaledb.job_runner, opts=after_db)
    return Endpoints(
        primary_dsn=owner_dsn,
        app_dsn=_dsn(host, ha.haproxy_port, pg.app_role, app_pw, pg.database, ca),
        replica_dsns=pulumi.Output.secret(pulumi.Output.all(
            *([_dsn(host, ha.haproxy_port + 1, pg.app_role, app_pw, pg.database, ca)]
              if cfg.replicas else []))),
        pooler_dsn=_dsn(host, cfg.pooler.port, pg.app_role, app_pw, pg.database, ca),
        pooler_admin_dsn=_dsn(host, cfg.pooler.port, cfg.pooler.admin_user, admin_pw,
                              "pgbouncer", ca),
        ca_cert=certs.ca_cert,
        testinfra_hosts=pulumi.Output.from_input(testinfra_hosts(cfg, tls)),
        primary_id=leader.system_identifier,
        # The SQL needs the database and its roles; the first backup runs beside it (the
        # WAL archive, checked by the backup, holds whatever the SQL writes meanwhile).
        ready=[database],
        superuser_dsn=_dsn(host, ha.haproxy_port, roles.BREAK_GLASS, super_pw, pg.database,
                           ca),
        monitor_dsn=_dsn(host, ha.haproxy_port, roles.MONITOR, monitor_pw, pg.database, ca),
        tenant_admin_dsn=_dsn(host, cfg.pooler.port, roles.TENANT_ADMIN, tadmin_pw,
                              pg.database, ca),
        tenant_key=pulumi.Output.secret(tenant_key),
    )


def testinfra_hosts(cfg: PlatformConfig, tls: render.TlsFiles) -> list[dict[str, Any]]:
    """What runs, in the `testinfra_hosts` format (docs/testing.md), non-secret files only.

    One `node` per Patroni member, with its data dir and address: which node leads is
    Patroni's to change, so the suite asks the servers. Each carries pgbackrest.conf and
    the backup schedule (every node archives and may be backed up through them). Left
    out: patroni.yml (passwords) and the postgresql.conf and pg_hba.conf Patroni writes
    into the data dir from it, whose texts are Patroni's, not a rendering of ours; the
    suite reads that pg_hba.conf for what it admits. Then the etcd members, HAProxy and
    PgBouncer with the files rendered for them.
    """
    user = ident_users()[0]  # the OS user every process here runs as
    backup, proxy = backup_props(cfg), proxy_props(cfg, tls)
    pooler = pooler_props(cfg, "", tls)  # the auth file holds secrets: not listed
    backup_files = {backup["config_path"]: backup["pgbackrest_conf"],
                    backup["schedule_path"]: backup["schedule"]}
    hosts = [inventory_entry(n.name, "node", "local://", backup_files, service_user=user,
                             data_dir=n.paths.data_dir, address=f"{n.host}:{n.port}",
                             pgbackrest_config=backup["config_path"]) for n in nodes(cfg)]
    for m, member in zip(etcd_props(cfg, tls)["members"], etcd(cfg), strict=True):
        path = str(LocalMember(member, Path(m["base"])).config_file)
        hosts.append(inventory_entry(m["name"], "etcd", "local://", {path: m["config"]},
                                     service_user=user))
    hosts.append(inventory_entry("haproxy", "proxy", "local://",
                                 {proxy["config_file"]: proxy["haproxy_cfg"]},
                                 service_user=user))
    hosts.append(inventory_entry("pooler", "pooler", "local://",
                                 {pooler["ini_path"]: pooler["pgbouncer_ini"]},
                                 service_user=user, pooler_ini=pooler["ini_path"],
                                 auth_file=pooler["auth_file"]))
    return hosts
