"""Where the local stack keeps everything, derived from settings alone.

The local backend uses it, and through `LocalBackend.local_files` (the backend
contract) so do the ops commands, which find the stack's pgBackRest config here.

Replicas share one port, each on its own loopback address (127.0.0.2, .3, ...):
that is how they look on real hosts, and PgBouncer 1.18 can spread a database
entry over a host list only when the port is the same for all of them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from infra import render
from infra.backends.base import slot_name
from infra.config import PlatformConfig
from infra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def state_dir(cfg: PlatformConfig) -> Path:
    base = Path(cfg.state_dir) if cfg.state_dir else ROOT / ".state" / cfg.stack
    return base if base.is_absolute() else (ROOT / base)


@dataclass(frozen=True)
class ReplicaLayout:
    index: int
    name: str
    slot: str
    host: str
    port: int
    paths: render.HostPaths
    # The replication password (0600, the service user's): primary_conninfo names it, so
    # no password sits in the standby's environment.
    passfile: Path


@dataclass(frozen=True)
class Layout:
    base: Path

    @property
    def secrets(self) -> Path:
        return self.base / "secrets"

    @property
    def pgbackrest_dir(self) -> Path:
        return self.base / "pgbackrest"

    @property
    def pgbackrest_conf(self) -> Path:
        return self.pgbackrest_dir / "pgbackrest.conf"

    @property
    def backup_schedule(self) -> Path:
        return self.pgbackrest_dir / "pgbackrest.cron"

    @property
    def backup_passfile(self) -> Path:
        return self.secrets / "pgbackrest.pgpass"

    @property
    def backup_paths(self) -> render.BackupPaths:
        d = self.pgbackrest_dir
        return render.BackupPaths(repo_path=str(self.base / "backups" / "repo"),
                                  log_path=str(d / "log"), lock_path=str(d / "lock"),
                                  spool_path=str(d / "spool"))

    @property
    def tls(self) -> render.TlsFiles:
        """The CA, certificate and key (infra.tls) every server of the stack uses."""
        d = self.base / "tls"
        return render.TlsFiles(cert_file=str(d / "server.crt"), key_file=str(d / "server.key"),
                               ca_file=str(d / "ca.crt"))

    @property
    def restores(self) -> Path:
        return self.base / "restores"

    @property
    def pooler_dir(self) -> Path:
        return self.base / "pgbouncer"

    @property
    def pooler_paths(self) -> render.PoolerPaths:
        d = self.pooler_dir
        # The auth file holds the auth_user's password: a secret file (tenant_users.py).
        return render.PoolerPaths(auth_file=str(self.secrets / "pgbouncer-userlist.txt"),
                                  socket_dir=str(self.base / "run"),
                                  pid_file=str(d / "pgbouncer.pid"),
                                  log_file=str(d / "pgbouncer.log"))

    def primary_paths(self) -> render.HostPaths:
        return render.HostPaths(data_dir=str(self.base / "primary"),
                                socket_dir=str(self.base / "run"),
                                pgbackrest_config=str(self.pgbackrest_conf))


def layout(cfg: PlatformConfig) -> Layout:
    return Layout(base=state_dir(cfg))


def replicas(cfg: PlatformConfig) -> list[ReplicaLayout]:
    """Replica i (1-based) on 127.0.0.(1+i), all at postgres.port + 1."""
    lay = layout(cfg)
    try:
        primary = ipaddress.ip_address(cfg.postgres.listen_address)
    except ValueError:
        primary = None
    if cfg.replicas and (primary is None or not primary.is_loopback or primary.version != 4):
        raise ConfigError(f"pg-platform:postgres.listen_address="
                          f"{cfg.postgres.listen_address!r}: the local backend runs replicas "
                          "on loopback addresses and needs an IPv4 loopback address here, "
                          "such as '127.0.0.1'")
    if cfg.postgres.port + 1 > 65535:
        raise ConfigError(f"pg-platform:postgres.port={cfg.postgres.port}: replicas listen on "
                          "port + 1, which must be at most 65535")
    out = []
    for i in range(1, cfg.replicas + 1):
        name = f"replica-{i}"
        out.append(ReplicaLayout(
            index=i, name=name, slot=slot_name(i), host=f"127.0.0.{1 + i}",
            port=cfg.postgres.port + 1,
            paths=render.HostPaths(data_dir=str(lay.base / name),
                                   socket_dir=str(lay.base / f"run-{name}"),
                                   pgbackrest_config=str(lay.pgbackrest_conf)),
            passfile=lay.secrets / f"{name}.pgpass"))
    return out
