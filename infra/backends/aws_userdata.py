"""Cloud-init user-data for the prod hosts, and the secret files each host fetches at boot.

Pure functions of settings and a few provider-computed strings (the primary's
address, the data volume's id, the secret's ARN), called inside `Output.apply`.
The user-data carries only non-secret files, the same renderings the local
stack writes; everything derived from a password goes into the host's Secrets
Manager bundle instead (`secret_bundle`), which the instance role may read.
EC2 keeps user-data readable to anyone allowed `ec2:DescribeInstanceAttribute`
and to every process on the host through the metadata service, which is why
no secret may land in it.
"""

from __future__ import annotations

import base64
import gzip
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra import render
from infra.backends.base import slot_name
from infra.backends.cloud_files import inventory_entry
from infra.config import PlatformConfig
from infra.render import ha_hosts
from infra.render.passfile import host_pgpass
from infra.render.patroni import HaSecrets
from infra.render.roles import Passwords, bootstrap_sql, userlist

USER_DATA_LIMIT = 16384        # bytes EC2 accepts, before base64
DATA_MOUNT = "/var/lib/postgresql"
PASSFILE = f"{DATA_MOUNT}/.pgpass"
CONF_DIR = "/etc/pg-platform"
SOCKET_DIR = "/var/run/postgresql"
PGBACKREST_CONF = f"{CONF_DIR}/pgbackrest.conf"
DEVICE_NAME = "/dev/sdf"
# Where pgp-setup installs the pooler's and the schedule's files (templates/pgp-setup.sh.j2).
POOLER_INI = "/etc/pgbouncer/pgbouncer.ini"
AUTH_FILE = "/etc/pgbouncer/userlist.txt"
CRON_FILE = "/etc/cron.d/pg-platform-pgbackrest"
# The SSH login of the hosts for the testinfra suite: the AMI is Debian 12 (aws.ami),
# whose cloud images log in as `admin`; the stack settings name no other.
LOGIN_USER = "admin"


@dataclass(frozen=True)
class Host:
    """What one host's files depend on; `replica` 0 is the primary."""

    replica: int
    volume_id: str
    secret_id: str
    primary_host: str = ""
    # ha.manager patroni: every database host's private address, primary first.
    addresses: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        return "replica" if self.replica else "primary"

    @property
    def slot(self) -> str:
        return slot_name(self.replica)


def data_dir(cfg: PlatformConfig) -> str:
    return f"{DATA_MOUNT}/{cfg.postgres.version}/main"


def host_paths(cfg: PlatformConfig, host: Host) -> render.HostPaths:
    """Only the primary archives WAL; replicas have no repository of their own."""
    return render.HostPaths(data_dir=data_dir(cfg), socket_dir=SOCKET_DIR,
                            pgbackrest_config=None if host.replica else PGBACKREST_CONF)


def backup_paths() -> render.BackupPaths:
    return render.BackupPaths(repo_path="/var/lib/pgbackrest", log_path="/var/log/pgbackrest",
                              lock_path="/tmp/pgbackrest", spool_path="/var/lib/pgbackrest-spool")


def hba_networks(cfg: PlatformConfig) -> tuple[str, ...]:
    """The VPC (replicas, clients behind allowed security groups) plus allowed CIDRs."""
    assert cfg.aws is not None
    return tuple(dict.fromkeys((cfg.aws.vpc_cidr, *cfg.aws.allowed_cidrs)))


def standby(cfg: PlatformConfig, host: Host) -> render.Standby:
    return render.Standby(primary_host=host.primary_host, primary_port=cfg.postgres.port,
                          user=cfg.postgres.replication_role, slot=host.slot, passfile=PASSFILE)


def pooler_ini(cfg: PlatformConfig, replica_hosts: tuple[str, ...]) -> str:
    """PgBouncer on the primary host: the local server read-write, replicas read-only."""
    paths = render.PoolerPaths(auth_file=AUTH_FILE, socket_dir=SOCKET_DIR)
    targets = render.PoolerTargets(listen_address="0.0.0.0", primary_host="127.0.0.1",
                                   primary_port=cfg.postgres.port, replica_hosts=replica_hosts,
                                   replica_port=cfg.postgres.port)
    return render.pgbouncer_ini(cfg, paths, targets)


def host_files(cfg: PlatformConfig, host: Host,
               replica_hosts: tuple[str, ...] = ()) -> dict[str, str]:
    """The non-secret files a host receives, by path (the shared renderings)."""
    paths = host_paths(cfg, host)
    files = {
        f"{CONF_DIR}/postgresql.conf": render.postgresql_conf(
            cfg, paths, timescaledb=True, listen="0.0.0.0",
            standby=standby(cfg, host) if host.replica else None),
        f"{CONF_DIR}/pg_hba.conf": render.pg_hba_conf(cfg, hba_networks(cfg),
            ident_map=False, tls=False),
    }
    if not host.replica:
        files[PGBACKREST_CONF] = render.pgbackrest_conf(cfg, paths, backup_paths())
        files[f"{CONF_DIR}/pgbackrest.cron"] = render.backup_schedule(
            cfg, PGBACKREST_CONF, user="postgres", passfile=PASSFILE)
        files[f"{CONF_DIR}/pgbouncer.ini"] = pooler_ini(cfg, replica_hosts)
    files.update(ha_plain_files(cfg, host))
    return files


def ha_layout(cfg: PlatformConfig) -> ha_hosts.HostLayout:
    """ha.manager patroni: where each host keeps Patroni's and etcd's files."""
    return ha_hosts.HostLayout(
        conf_dir=CONF_DIR, data_dir=data_dir(cfg), socket_dir=SOCKET_DIR,
        pgbackrest_config=PGBACKREST_CONF,
        bin_dir=f"/usr/lib/postgresql/{cfg.postgres.version}/bin",
        etcd_data_dir=f"{DATA_MOUNT}/etcd", hba_networks=hba_networks(cfg))


def ha_plain_files(cfg: PlatformConfig, host: Host) -> dict[str, str]:
    """etcd's config on the first three hosts (infra/render/ha_hosts.py); nothing without HA."""
    if cfg.ha.manager != "patroni" or not host.addresses:
        return {}
    return ha_hosts.plain_files(cfg, host.replica, host.addresses, ha_layout(cfg))


def ha_bundle_files(cfg: PlatformConfig, host: Host,
                    secrets: HaSecrets | None) -> list[dict[str, str]]:
    """The host's patroni.yml for its Secrets Manager bundle (it holds passwords)."""
    if secrets is None or not host.addresses:
        return []
    return [{"path": path, "owner": "postgres", "mode": "0600", "content": text}
            for path, text in ha_hosts.secret_files(cfg, host.replica, host.addresses,
                                                    ha_layout(cfg), secrets).items()]


def testinfra_hosts(cfg: PlatformConfig, ips: list[str],
                    user: str = LOGIN_USER) -> list[dict[str, Any]]:
    """The hosts for the testinfra suite; `cfg` carries the bucket's name, `ips` the
    private addresses, primary first. PgBouncer runs on the primary's host.

    `files` are the texts `host_files` gives user-data (cloud-init writes them verbatim)
    and pgp-setup's copies of them; the Secrets Manager bundle's files are left out.
    """
    replica_ips = tuple(ips[1:])
    spec = [f"ssh://{user}@{ip}" for ip in ips]
    files = [host_files(cfg, Host(replica=i, volume_id="", secret_id="",
                                  primary_host=ips[0] if i else "", addresses=tuple(ips)),
                        replica_ips)
             for i in range(len(ips))]
    ini = files[0][f"{CONF_DIR}/pgbouncer.ini"]
    files[0][CRON_FILE] = files[0][f"{CONF_DIR}/pgbackrest.cron"]
    return [
        inventory_entry("primary", "primary", spec[0], files[0], data_dir=data_dir(cfg),
                        pgbackrest_config=PGBACKREST_CONF),
        *[inventory_entry(f"replica-{i}", "replica", spec[i], files[i], data_dir=data_dir(cfg))
          for i in range(1, len(ips))],
        inventory_entry("pooler", "pooler", spec[0], {POOLER_INI: ini},
                        pooler_ini=POOLER_INI, auth_file=AUTH_FILE),
    ]


def host_env(cfg: PlatformConfig, host: Host) -> list[tuple[str, str]]:
    assert cfg.aws is not None
    pg = cfg.postgres
    env = {
        "ROLE": host.role, "PG_VERSION": str(pg.version), "PG_PORT": str(pg.port),
        "DATA_MOUNT": DATA_MOUNT, "DATA_DIR": data_dir(cfg), "PASSFILE": PASSFILE,
        "VOLUME_ID": host.volume_id, "DEVICE_NAME": DEVICE_NAME,
        "SECRET_ID": host.secret_id, "AWS_REGION": cfg.aws.region,
        "OWNER_ROLE": pg.owner_role, "REPLICATION_ROLE": pg.replication_role,
        "STANZA": cfg.backup.stanza, "PRIMARY_HOST": host.primary_host, "SLOT": host.slot,
    }
    return [(k, shlex.quote(v)) for k, v in env.items()]


def user_data(cfg: PlatformConfig, host: Host, replica_hosts: tuple[str, ...] = ()) -> str:
    """The #cloud-config document for one host."""
    setup = render.render("pgp-setup.sh.j2", role=host.role, pg_version=cfg.postgres.version)
    return render.render(
        "cloud-init.yaml.j2", role=host.role, stack=cfg.stack, secret_id=host.secret_id,
        host_env=host_env(cfg, host), files=sorted(host_files(cfg, host, replica_hosts).items()),
        pg_version=cfg.postgres.version, data_mount=DATA_MOUNT, data_dir=data_dir(cfg),
        passfile=PASSFILE, setup_script=setup)


def fits(text: str) -> bool:
    return len(text.encode()) <= USER_DATA_LIMIT


def gzip_base64(text: str) -> str:
    """Cloud-init reads gzip user-data; mtime 0 keeps it stable from run to run."""
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode("ascii")


def secret_bundle(cfg: PlatformConfig, pw: Passwords, replica: int, primary_host: str,
                  ha_files: Sequence[dict[str, str]] = ()) -> str:
    """The JSON the host's pgp-fetch-secrets writes out: passfile, and on the primary the
    initdb password, the bootstrap SQL and PgBouncer's auth file (`ha_files`: patroni.yml)."""
    files = [{"path": PASSFILE, "owner": "postgres", "mode": "0600",
              "content": host_pgpass(cfg, pw, primary_host, primary=not replica)}]
    if not replica:
        files += [
            {"path": f"{CONF_DIR}/secret/superuser-password", "owner": "postgres",
             "mode": "0600", "content": pw.owner + "\n"},
            {"path": f"{CONF_DIR}/secret/bootstrap.sql", "owner": "postgres", "mode": "0600",
             "content": bootstrap_sql(cfg, pw)},
            {"path": AUTH_FILE, "owner": "postgres", "mode": "0600",
             "content": userlist(cfg, pw)},
        ]
    files += list(ha_files)
    return json.dumps({"files": files}, sort_keys=True)
