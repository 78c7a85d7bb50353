"""What each prod host is given: a stable user-data, and the files of its config bundle.

User-data is written once per instance and changing it stops the instance, so
it carries only what never changes on day 2 (docs/day2.md): the host's
identity (role, data volume, bundle secret, primary's address), the pinned
packages, the systemd units, the setup script and the applier (pgp-apply).
Every rendered config file goes into the host's bundle instead
(infra/backends/aws_bundle.py), which the applier converges in place.

Pure functions of settings and provider-computed strings, called inside
`Output.apply`. No secret may land in user-data: EC2 shows it to anyone allowed
`ec2:DescribeInstanceAttribute` and to every process on the host.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import render
from infra.backends.base import slot_name
from infra.backends.cloud_files import inventory_entry
from infra.backends.host_bundle import ETCD_UNIT, PATRONI_UNIT, POSTGRES_UNIT
from infra.config import PlatformConfig
from infra.hostagent import apply as applier
from infra.hostagent import leader_only, patroni_api, patroni_step, postgres_node
from infra.render.backup_timers import backup_timer_files
from infra.render.monitoring import SYSTEM_PYTHON

USER_DATA_LIMIT = 16384        # bytes EC2 accepts, before base64
DATA_MOUNT = "/var/lib/postgresql"
CONF_DIR = "/etc/pg-platform"
SECRET_DIR = f"{CONF_DIR}/secret"
# On the root volume, never the data volume: it must not land in data snapshots.
PASSFILE = f"{SECRET_DIR}/pgpass"
SOCKET_DIR = "/var/run/postgresql"
PGBACKREST_CONF = f"{CONF_DIR}/pgbackrest.conf"
DEVICE_NAME = "/dev/sdf"
POOLER_INI = "/etc/pgbouncer/pgbouncer.ini"
AUTH_FILE = "/etc/pgbouncer/userlist.txt"
POOLER_LIMITS = "/etc/systemd/system/pgbouncer.service.d/pg-platform.conf"
TLS = render.TlsFiles(cert_file=f"{CONF_DIR}/tls/server.crt",
                      key_file=f"{CONF_DIR}/tls/server.key", ca_file=f"{CONF_DIR}/tls/ca.crt")
APPLIER = "/usr/local/lib/pg-platform/pgp_apply.py"
APPLIER_SOURCE = Path(applier.__file__)
# Its modules go beside it, under the names it imports them by: always the server's,
# and with `ha.manager: patroni` the Patroni step and REST client (infra/hostagent/apply.py).
APPLIER_MODULES = (Path(postgres_node.__file__),)
HA_APPLIER_MODULES = (Path(patroni_step.__file__), Path(patroni_api.__file__))
PROXY_HOST = "127.0.0.1"  # HAProxy on each pooler host, loopback only (infra/backends/aws_ha)
# With Patroni every host's backup timers run under this guard (infra/hostagent/leader_only):
# delivered in the bundle, beside patroni_api.py, which it imports.
LEADER_GUARD = "/usr/local/lib/pg-platform/pgp_leader_only.py"
LEADER_GUARD_SOURCE = Path(leader_only.__file__)
# Debian starts its own etcd (on 2379) and Patroni units at install; pg-platform runs both
# under its own (the bundle's), so with `ha.manager: patroni` these are masked first.
HA_MASKED = ("etcd.service", "patroni.service")


@dataclass(frozen=True)
class Host:
    """What one host's user-data depends on; `replica` 0 is the primary."""

    replica: int
    volume_id: str
    secret_id: str
    primary_host: str = ""

    @property
    def role(self) -> str:
        return "replica" if self.replica else "primary"

    @property
    def name(self) -> str:
        return f"replica-{self.replica}" if self.replica else "primary"

    @property
    def slot(self) -> str:
        return slot_name(self.replica)


def data_dir(cfg: PlatformConfig) -> str:
    return f"{DATA_MOUNT}/{cfg.postgres.version}/main"


def patroni(cfg: PlatformConfig) -> bool:
    return cfg.ha.manager == "patroni"


def host_paths(cfg: PlatformConfig, host: Host) -> render.HostPaths:
    """Only the primary archives WAL; replicas have no repository of their own. With
    Patroni any host may lead (and archive), and replicas are made by a pgBackRest restore."""
    repo = None if host.replica and not patroni(cfg) else PGBACKREST_CONF
    return render.HostPaths(data_dir=data_dir(cfg), socket_dir=SOCKET_DIR,
                            pgbackrest_config=repo)


def backup_paths() -> render.BackupPaths:
    return render.BackupPaths(repo_path="/var/lib/pgbackrest", log_path="/var/log/pgbackrest",
                              lock_path="/tmp/pgbackrest", spool_path="/var/lib/pgbackrest-spool")


def hba_networks(cfg: PlatformConfig) -> tuple[str, ...]:
    """The VPC (the pooler's own connection to its primary, replicas, clients behind allowed
    security groups) plus the allowed CIDRs."""
    assert cfg.aws is not None
    return tuple(dict.fromkeys((cfg.aws.vpc_cidr, *cfg.aws.allowed_cidrs)))


def standby(cfg: PlatformConfig, host: Host) -> render.Standby:
    return render.Standby(primary_host=host.primary_host, primary_port=cfg.postgres.port,
                          user=cfg.postgres.replication_role, slot=host.slot, passfile=PASSFILE,
                          sslrootcert=TLS.ca_file)


def pooler_host(cfg: PlatformConfig, host: Host) -> bool:
    """Whether `host` runs PgBouncer (and the backup timers): the primary, and with Patroni
    every host, each dialling its own HAProxy, so losing one host loses one pooler of
    the multi-host `pooler_dsn`, not the pool."""
    return not host.replica or patroni(cfg)


def pooler_ini(cfg: PlatformConfig, primary_host: str, replica_hosts: tuple[str, ...]) -> str:
    """PgBouncer on the primary host. It reaches its primary at the host's private address,
    which pg_hba admits (the VPC) and the certificate names, never 127.0.0.1. With Patroni
    it dials HAProxy on loopback instead (read-write, read-only on the next port), which
    follows the leader; every node's certificate then also names 127.0.0.1, and every
    host's pgbouncer.ini is the same."""
    paths = render.PoolerPaths(auth_file=AUTH_FILE, socket_dir=SOCKET_DIR)
    port = replica_port = cfg.postgres.port
    if patroni(cfg):
        primary_host, port, replica_port = PROXY_HOST, cfg.ha.haproxy_port, cfg.ha.haproxy_port + 1
        replica_hosts = (PROXY_HOST,) if replica_hosts else ()
    targets = render.PoolerTargets(listen_address="0.0.0.0", primary_host=primary_host,
                                   primary_port=port, replica_hosts=replica_hosts,
                                   replica_port=replica_port)
    return render.pgbouncer_ini(cfg, paths, targets, TLS)


def pooler_nofile(cfg: PlatformConfig) -> int:
    """File descriptors PgBouncer may need: every client, every server connection to the
    primary and each replica, and some for logs and sockets (Debian's unit gives 1024)."""
    servers = cfg.postgres.max_connections * (1 + cfg.replicas)
    return cfg.pooler.max_client_conn + servers + 128


def pooler_limits(cfg: PlatformConfig) -> str:
    return ("# Rendered by pg-platform (infra/backends/aws_userdata.py). Do not edit.\n"
            "# pooler.max_client_conn plus server connections; Debian's unit leaves 1024.\n"
            f"[Service]\nLimitNOFILE={pooler_nofile(cfg)}\n")


def host_files(cfg: PlatformConfig, host: Host, replica_hosts: tuple[str, ...] = (),
               self_ip: str = "") -> dict[str, str]:
    """The non-secret rendered files of one host, by the path they are installed at.

    `self_ip` is the host's private address (the primary's PgBouncer dials it).
    """
    paths = host_paths(cfg, host)
    files = {
        f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
            cfg, paths, timescaledb=True, listen="0.0.0.0", tls=TLS,
            standby=standby(cfg, host) if host.replica else None),
        f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(cfg, hba_networks(cfg),
                                                      ident_map=False, tls=True),
    }
    if paths.pgbackrest_config:
        files[PGBACKREST_CONF] = render.pgbackrest_conf(cfg, paths, backup_paths())
    if pooler_host(cfg, host):
        files.update(backup_timers(cfg))
        files[POOLER_INI] = pooler_ini(cfg, self_ip or host.primary_host or "127.0.0.1",
                                       replica_hosts)
        files[POOLER_LIMITS] = pooler_limits(cfg)
    return files


def backup_timers(cfg: PlatformConfig) -> dict[str, str]:
    """The primary's scheduled backups: a systemd timer and service per backup type
    (infra/render/backup_timers.py); pgBackRest logs in as break-glass by socket peer.
    With Patroni every host has them, and each run asks its own Patroni first: only the
    leader's backs up (LEADER_GUARD)."""
    if not patroni(cfg):
        return backup_timer_files(cfg, PGBACKREST_CONF, passfile=None,
                                  postgres_unit=POSTGRES_UNIT)
    guard = f"{SYSTEM_PYTHON} {LEADER_GUARD} {CONF_DIR}/patroni.yml {TLS.ca_file}"
    return backup_timer_files(cfg, PGBACKREST_CONF, passfile=None, postgres_unit=PATRONI_UNIT,
                              guard=guard)


def testinfra_hosts(cfg: PlatformConfig, ips: list[str]) -> list[dict[str, Any]]:
    """The hosts for the testinfra suite; `cfg` carries the bucket's name, `ips` the
    private addresses, primary first. The `pooler` entry is the primary's host's
    PgBouncer (the suite checks one); with Patroni the other hosts run one too, and
    their pgbouncer.ini is listed among their own files. The login user is the AMI's
    (`aws.login_user`). Secret files are left out."""
    assert cfg.aws is not None
    replica_ips = tuple(ips[1:])
    spec = [f"ssh://{cfg.aws.login_user}@{ip}" for ip in ips]
    hosts = [Host(replica=i, volume_id="", secret_id="", primary_host=ips[0] if i else "")
             for i in range(len(ips))]
    files = [host_files(cfg, h, replica_ips, ips[h.replica]) for h in hosts]
    ini = files[0].pop(POOLER_INI)
    return [
        inventory_entry("primary", "primary", spec[0], files[0], data_dir=data_dir(cfg),
                        pgbackrest_config=PGBACKREST_CONF),
        *[inventory_entry(f"replica-{i}", "replica", spec[i], files[i], data_dir=data_dir(cfg))
          for i in range(1, len(ips))],
        inventory_entry("pooler", "pooler", spec[0], {POOLER_INI: ini},
                        pooler_ini=POOLER_INI, auth_file=AUTH_FILE),
    ]


def host_env(cfg: PlatformConfig, host: Host) -> list[tuple[str, str]]:
    """The host's identity: none of it changes on day 2, so user-data stays the same."""
    assert cfg.aws is not None
    pg = cfg.postgres
    env = {
        "ROLE": host.role, "HOST_NAME": host.name, "PG_VERSION": str(pg.version),
        "PG_PORT": str(pg.port), "DATA_MOUNT": DATA_MOUNT, "DATA_DIR": data_dir(cfg),
        "PASSFILE": PASSFILE, "CA_FILE": TLS.ca_file, "VOLUME_ID": host.volume_id,
        "DEVICE_NAME": DEVICE_NAME, "SECRET_ID": host.secret_id, "AWS_REGION": cfg.aws.region,
        "REPLICATION_ROLE": pg.replication_role, "STANZA": cfg.backup.stanza,
        "PGBACKREST_CONF": PGBACKREST_CONF, "PRIMARY_HOST": host.primary_host,
        "SLOT": host.slot, "POSTGRES_UNIT": POSTGRES_UNIT, "APPLIER": APPLIER,
    }
    if patroni(cfg):
        env.update({"PATRONI_UNIT": PATRONI_UNIT, "ETCD_UNIT": ETCD_UNIT,
                    "RESTAPI_PORT": str(cfg.ha.restapi_port)})
    return [(k, shlex.quote(v)) for k, v in env.items()]


def user_data(cfg: PlatformConfig, host: Host) -> str:
    """The #cloud-config document for one host; the same on every day-2 change."""
    assert cfg.aws is not None
    ha = patroni(cfg)
    pins = cfg.aws.pins(cfg.postgres.version, ha=ha)
    setup = render.render("pgp-setup.sh.j2", role=host.role, pg_version=cfg.postgres.version,
                          ha=ha, masked=HA_MASKED)
    modules = [(str(Path(APPLIER).with_name(m.name)), m.read_text())
               for m in (*APPLIER_MODULES, *(HA_APPLIER_MODULES if ha else ()))]
    return render.render(
        "cloud-init.yaml.j2", role=host.role, stack=cfg.stack, secret_id=host.secret_id,
        host_env=host_env(cfg, host), pins=[f"{n}={v}" for n, v in pins],
        pg_version=cfg.postgres.version, data_mount=DATA_MOUNT, data_dir=data_dir(cfg),
        conf_dir=CONF_DIR, setup_script=setup, applier_path=APPLIER,
        applier_source=APPLIER_SOURCE.read_text(), applier_modules=modules,
        postgres_unit=POSTGRES_UNIT, ha=ha)


def fits(text: str) -> bool:
    return len(text.encode()) <= USER_DATA_LIMIT


def gzip_base64(text: str) -> str:
    """Cloud-init reads gzip user-data; mtime 0 keeps it stable from run to run."""
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode("ascii")
