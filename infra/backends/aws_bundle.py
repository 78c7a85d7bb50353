"""Each prod host's config bundle: its rendered files, its own secrets, roles and slots.

A host's bundle holds only that host's secrets: its own TLS key, and the
passwords or verifiers it uses itself (the primary: PgBouncer's auth file and
the roles SQL; a replica: the replicator's passfile; with Patroni every host runs
its own PgBouncer and so has its own auth file). The break-glass superuser
has no password at all (peer on the socket), so none is on any volume; with
`ha.manager: patroni` it has one, for pg_rewind over the network, and only the
host's 0600 patroni.yml holds it (infra/backends/aws_ha.py).

`extra_files` is the hook for other features' files (Patroni's patroni.yml,
backup timers): return more `BundleFile`s there and they reach running hosts
in place, with their own `then` actions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi

from infra import roles
from infra.backends import aws_ha
from infra.backends import aws_userdata as ud
from infra.backends.converge import status_key
from infra.backends.host_bundle import (
    PATRONI_UNIT,
    PGBOUNCER_UNIT,
    POSTGRES_UNIT,
    BundleFile,
    dumps,
    make,
    reload_postgres,
)
from infra.config import PlatformConfig
from infra.render.backup_timers import timer_units
from infra.render.monitoring import SYSTEM_PYTHON, pgbouncer_exporter_launcher
from infra.render.passfile import pgpass
from infra.render.patroni import HaSecrets
from infra.render.pooler import pooler_users, userlist_txt
from infra.render.roles_sql import bootstrap_script

EXPORTER_UNIT = "prometheus-postgres-exporter.service"
EXPORTER_DEFAULTS = "/etc/default/prometheus-postgres-exporter"
EXPORTER_PASSFILE = "/var/lib/prometheus/.pgpass"
BOUNCER_EXPORTER_UNIT = "prometheus-pgbouncer-exporter.service"
BOUNCER_EXPORTER_CONF = "/etc/prometheus-pgbouncer-exporter.conf"
# Debian's PgBouncer exporter (1.7) dies on PgBouncer 1.18's SHOW STATS; the launcher
# (monitoring/pgbouncer_exporter.py) runs it with today's columns.
BOUNCER_EXPORTER_LAUNCHER = "/usr/local/lib/pg-platform/pgbouncer_exporter.py"
BOUNCER_EXPORTER_DROP_IN = ("/etc/systemd/system/prometheus-pgbouncer-exporter.service.d/"
                            "pg-platform.conf")
BOUNCER_EXPORTER_PASSFILE = f"{ud.SECRET_DIR}/pgbouncer-exporter.pgpass"


@dataclass(frozen=True)
class CloudPasswords:
    """Every generated password of a dev or prod stack, as plain strings inside an apply."""

    owner: str
    app: str
    replicator: str
    pooler_admin: str
    monitor: str
    tenant_admin: str


@dataclass(frozen=True)
class HostTls:
    """The stack's CA and this host's own certificate and key (PEM)."""

    ca_cert: str
    cert: str
    key: str


@dataclass(frozen=True)
class HostAddresses:
    """Private addresses: this host's, the primary's, and the replicas' (in order)."""

    own: str
    primary: str
    replicas: tuple[str, ...]


def cloud_passwords(pws: dict[str, pulumi.Output[str]]) -> pulumi.Output[CloudPasswords]:
    """One secret Output with every password, keyed as CloudPasswords' fields."""
    keys = list(pws)
    return pulumi.Output.secret(pulumi.Output.all(*pws.values()).apply(
        lambda v: CloudPasswords(**dict(zip(keys, v, strict=True)))))


def bootstrap_spec(cfg: PlatformConfig, pw: CloudPasswords) -> roles.Bootstrap:
    pg = cfg.postgres
    return roles.Bootstrap.of(
        pg.database,
        {"owner": pw.owner, "app": pw.app, "replication": pw.replicator,
         "monitor": pw.monitor, "tenant_admin": pw.tenant_admin},
        {"owner": pg.owner_role, "app": pg.app_role, "replication": pg.replication_role,
         "monitor": roles.MONITOR, "tenant_admin": roles.TENANT_ADMIN})


def extra_files(cfg: PlatformConfig, host: ud.Host, addresses: HostAddresses,
                ha: HaSecrets | None = None) -> list[BundleFile]:
    """Files other features add to a host's bundle: with `ha.manager: patroni` its
    patroni.yml and, on the first three hosts, etcd.conf (infra/backends/aws_ha.py)."""
    return aws_ha.bundle_files(cfg, host.replica, (addresses.primary, *addresses.replicas),
                               ha)


def _tls_files(tls: HostTls, pooler: bool, ha: bool) -> list[BundleFile]:
    # Under Patroni a reload of its unit also has PostgreSQL re-read its certificate
    # (infra/hostagent/patroni_step.py); PgBouncer serves the same certificate.
    server = (f"reload:{PATRONI_UNIT}",) if ha else reload_postgres()
    then = server + ((f"reload:{PGBOUNCER_UNIT}",) if pooler else ())
    return [
        BundleFile(ud.TLS.ca_file, tls.ca_cert, "root", "0644", then),
        BundleFile(ud.TLS.cert_file, tls.cert, "postgres", "0644", then),
        BundleFile(ud.TLS.key_file, tls.key, "postgres", "0600", then),
    ]


def _access_files(cfg: PlatformConfig) -> list[BundleFile]:
    """The SSH keys from config for the AMI's login user; changed in place, never a rebuild."""
    assert cfg.aws is not None
    if not cfg.aws.ssh_public_keys:
        return []
    user = cfg.aws.login_user
    text = "# pg-platform: pg-platform:aws.ssh_public_keys\n" + "".join(
        f"{k}\n" for k in cfg.aws.ssh_public_keys)
    return [BundleFile(f"/home/{user}/.ssh/authorized_keys", text, user, "0600",
                       dir_mode="0700")]


def _exporter_files(cfg: PlatformConfig, pw: CloudPasswords,
                    addresses: HostAddresses) -> list[BundleFile]:
    """Debian's postgres exporter as platform_monitor (pg_monitor only), over verified TLS;
    its password in the prometheus user's passfile, never in its environment."""
    pg = cfg.postgres
    restart = (f"restart:{EXPORTER_UNIT}",)
    dsn = (f"host={addresses.own} port={pg.port} user={roles.MONITOR} dbname={pg.database} "
           f"sslmode=verify-full sslrootcert={ud.TLS.ca_file}")
    defaults = ("# Rendered by pg-platform (infra/backends/aws_bundle.py). Do not edit.\n"
                f'DATA_SOURCE_NAME="{dsn}"\n'
                'ARGS="--web.listen-address=:9187"\n')
    return [
        BundleFile(EXPORTER_DEFAULTS, defaults, "root", "0644", restart),
        BundleFile(EXPORTER_PASSFILE, pgpass([(addresses.own, str(pg.port), "*",
                                               roles.MONITOR, pw.monitor)]),
                   "prometheus", "0600", restart),
    ]


def _pooler_exporter_files(cfg: PlatformConfig, pw: CloudPasswords,
                           addresses: HostAddresses) -> list[BundleFile]:
    """Debian's PgBouncer exporter (runs as postgres) on the admin console over verified
    TLS; libpq reads the admin password from a passfile named in the unit, not argv/env."""
    restart = (f"restart:{BOUNCER_EXPORTER_UNIT}",)
    conf = ("# Rendered by pg-platform (infra/backends/aws_bundle.py). Do not edit.\n"
            f"port = 9127\nhost = 0.0.0.0\npgbouncer-host = {addresses.own}\n"
            f"pgbouncer-port = {cfg.pooler.port}\npgbouncer-user = {cfg.pooler.admin_user}\n"
            "licence-location = /usr/share/doc/prometheus-pgbouncer-exporter/copyright\n")
    drop_in = ("# Rendered by pg-platform (infra/backends/aws_bundle.py). Do not edit.\n"
               f"[Service]\nExecStart=\nExecStart={SYSTEM_PYTHON} {BOUNCER_EXPORTER_LAUNCHER}\n"
               f"Environment=PGPASSFILE={BOUNCER_EXPORTER_PASSFILE} "
               f"PGSSLMODE=verify-full PGSSLROOTCERT={ud.TLS.ca_file}\n")
    return [
        BundleFile(BOUNCER_EXPORTER_LAUNCHER, pgbouncer_exporter_launcher(), "root", "0755",
                   restart),
        BundleFile(BOUNCER_EXPORTER_CONF, conf, "root", "0644", restart),
        BundleFile(BOUNCER_EXPORTER_DROP_IN, drop_in, "root", "0644",
                   ("daemon-reload", *restart)),
        BundleFile(BOUNCER_EXPORTER_PASSFILE, pgpass([(addresses.own, str(cfg.pooler.port),
                                                       "pgbouncer", cfg.pooler.admin_user,
                                                       pw.pooler_admin)]),
                   "postgres", "0600", restart),
    ]


def host_bundle(cfg: PlatformConfig, host: ud.Host, addresses: HostAddresses,
                pw: CloudPasswords, tls: HostTls, bucket: str,
                ha: HaSecrets | None = None) -> str:
    """The JSON bundle of one host (see infra/hostagent/apply.py for what it means);
    `ha`: Patroni's passwords with `ha.manager: patroni`, else None."""
    assert cfg.aws is not None
    pg = cfg.postgres
    host = dataclasses.replace(host, primary_host=addresses.primary if host.replica else "")
    rendered = ud.host_files(cfg, host, addresses.replicas, addresses.own)
    patroni = aws_ha.enabled(cfg)
    if patroni:
        # Patroni writes these itself from patroni.yml (the same renderings, which the
        # build still checks with the real server, infra/backends/aws.py).
        for name in ("postgresql.conf", "pg_hba.conf"):
            del rendered[f"{ud.CONF_DIR}/{name}"]
    then = {
        f"{ud.CONF_DIR}/postgresql.conf": reload_postgres(),
        f"{ud.CONF_DIR}/pg_hba.conf": reload_postgres(),
        ud.POOLER_INI: (f"reload:{PGBOUNCER_UNIT}",),
        ud.POOLER_LIMITS: ("daemon-reload", f"restart:{PGBOUNCER_UNIT}"),
        **{path: ("daemon-reload",) for path in ud.backup_timers(cfg)},
    }
    owners = {ud.POOLER_INI: ("postgres", "0640"), ud.PGBACKREST_CONF: ("postgres", "0640")}
    files = [BundleFile(path, text, *owners.get(path, ("root", "0644")),
                        then=then.get(path, ()))
             for path, text in rendered.items()]
    pooler = ud.pooler_host(cfg, host)
    files += _tls_files(tls, pooler, patroni)
    files += _access_files(cfg)
    files += _exporter_files(cfg, pw, addresses)
    sql, slots = "", [f"replica_{i}" for i in range(1, cfg.replicas + 1)]
    first: list[str] = []   # enabled before the exporter, in this order
    everyone = (addresses.primary, *addresses.replicas)
    if patroni:
        # Any host may lead, and the leader runs the roles SQL: it holds only SCRAM
        # verifiers, which every node's pg_authid has anyway (replicated). Slots are
        # Patroni's (use_slots), the replicas' passfile Patroni's own pgpass.
        sql, slots = bootstrap_script(bootstrap_spec(cfg, pw)), []
        first += aws_ha.enable(cfg, host.replica, everyone)
    elif host.replica:
        files.append(BundleFile(ud.PASSFILE, pgpass([(addresses.primary, str(pg.port), "*",
                                                      pg.replication_role, pw.replicator)]),
                                "postgres", "0600"))
    if host.replica:
        slots = []
    else:
        sql = bootstrap_script(bootstrap_spec(cfg, pw))
    if pooler:
        # Its own PgBouncer's auth file (verifiers) and console passfile: with Patroni
        # every host's, so the pool outlives any one host; the guarded backup timers too.
        users = pooler_users(cfg, pw.app, pw.pooler_admin)
        files.append(BundleFile(ud.AUTH_FILE, userlist_txt(users), "postgres", "0600",
                                (f"reload:{PGBOUNCER_UNIT}",)))
        files += _pooler_exporter_files(cfg, pw, addresses)
        first += [PGBOUNCER_UNIT, BOUNCER_EXPORTER_UNIT, *timer_units(cfg)]
    if pooler and patroni:
        files.append(BundleFile(ud.LEADER_GUARD, ud.LEADER_GUARD_SOURCE.read_text(), "root",
                                "0755"))
    files += extra_files(cfg, host, addresses, ha)
    postgres = {"unit": POSTGRES_UNIT, "socket_dir": ud.SOCKET_DIR, "port": pg.port,
                "os_user": "postgres"}
    report = {"bucket": bucket, "key": status_key(cfg.stack, host.name),
              "region": cfg.aws.region}
    ha_spec = aws_ha.applier_spec(cfg, host.replica, everyone) if patroni else None
    return dumps(make(host.name, files, postgres=postgres, sql=sql, slots=slots,
                      enable=[*first, EXPORTER_UNIT], report=report, patroni=ha_spec))
