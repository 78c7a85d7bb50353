"""PostgreSQL's own files: postgresql.conf and pg_hba.conf, for a primary or a standby."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from infra.config import PlatformConfig
from infra.errors import RenderError
from infra.render.template import render
from infra.roles import BREAK_GLASS


@dataclass(frozen=True)
class HostPaths:
    """Where a host keeps its files; the only thing that differs between backends.

    `pgbackrest_config` names the host's pgbackrest.conf; when it is None the
    server does not archive WAL (test servers, hosts without a repository).
    """

    data_dir: str
    socket_dir: str
    pgbackrest_config: str | None = None


@dataclass(frozen=True)
class TlsFiles:
    """Where a host keeps the platform's TLS files (made by infra.tls); the key is 0600."""

    cert_file: str
    key_file: str
    ca_file: str


@dataclass(frozen=True)
class Standby:
    """How a replica reaches its primary; never with a password in the conninfo.

    The password comes from the libpq passfile named here (hosts), or, when
    `passfile` is None, from the postmaster's environment (the local stack, which
    keeps no password on disk).
    """

    primary_host: str
    primary_port: int
    user: str
    slot: str
    passfile: str | None = None
    # The CA that signed the primary's certificate: replication then runs over verified TLS.
    sslrootcert: str | None = None

    @property
    def conninfo(self) -> str:
        parts = {"host": self.primary_host, "port": str(self.primary_port), "user": self.user}
        if self.passfile:
            parts["passfile"] = self.passfile
        parts["application_name"] = self.slot
        if self.sslrootcert:
            parts.update(sslmode="verify-full", sslrootcert=self.sslrootcert)
        for key, value in parts.items():
            if any(c in value for c in " '\\\n"):
                raise RenderError(f"primary_conninfo {key}={value!r}: spaces, quotes and "
                                  "backslashes are not allowed")
        return " ".join(f"{k}={v}" for k, v in parts.items())


def preload_libraries(timescaledb: bool) -> tuple[str, ...]:
    return ("pg_stat_statements", "timescaledb") if timescaledb else ("pg_stat_statements",)


def archive_command(cfg: PlatformConfig, pgbackrest_config: str) -> str:
    """The shell command PostgreSQL runs for each WAL segment."""
    return (f"pgbackrest --config={shlex.quote(pgbackrest_config)} "
            f"--stanza={cfg.backup.stanza} archive-push %p")


def postgresql_conf(cfg: PlatformConfig, paths: HostPaths, *, timescaledb: bool,
                    port: int | None = None, listen: str | None = None,
                    standby: Standby | None = None, tls: TlsFiles | None = None) -> str:
    """postgresql.conf for a primary or replica; `port`/`listen` override the configured ones."""
    pg = cfg.postgres
    if port is not None:
        pg = replace(pg, port=port)
    if listen is not None:
        pg = replace(pg, listen_address=listen)
    archive = archive_command(cfg, paths.pgbackrest_config) if paths.pgbackrest_config else ""
    return render("postgresql.conf.j2", pg=pg, paths=paths,
                  preload=preload_libraries(timescaledb),
                  max_wal_senders=cfg.max_wal_senders, standby=standby,
                  archive_command=archive, tls=tls)


def pg_hba_conf(cfg: PlatformConfig, networks: tuple[str, ...] = ("127.0.0.1/32",), *,
                ident_map: bool = True, tls: bool = True) -> str:
    """pg_hba.conf: hostssl + scram-sha-256 from the given networks only; the local socket
    for the bootstrap superuser by peer (through pg_ident.conf's `breakglass` map when
    `ident_map`, else only where the OS user is named like the role).

    `tls=False` (`host` lines) only for hosts without certificates yet (dev and prod,
    issue #17): a `hostssl` line on a server without TLS admits nobody.
    """
    return render("pg_hba.conf.j2", networks=networks, superuser=BREAK_GLASS,
                  ident_map=ident_map, hostssl=tls,
                  replication_role=cfg.postgres.replication_role)


def pg_ident_conf(*os_users: str) -> str:
    """pg_ident.conf: these OS users may be the bootstrap superuser, on the socket only."""
    return render("pg_ident.conf.j2", os_users=sorted(set(os_users)), superuser=BREAK_GLASS)
