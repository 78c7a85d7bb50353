"""PgBouncer's files: pgbouncer.ini and the SCRAM-only auth file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra import scram
from infra.config import PlatformConfig
from infra.errors import RenderError
from infra.render.pooler_auth import AUTH_QUERY
from infra.render.postgres import TlsFiles
from infra.render.template import render


@dataclass(frozen=True)
class PoolerPaths:
    """Where PgBouncer keeps its files; log_file/pid_file None leave them out (containers)."""

    auth_file: str
    socket_dir: str
    pid_file: str | None = None
    log_file: str | None = None


@dataclass(frozen=True)
class PoolerTargets:
    """Where PgBouncer listens and which servers it pools.

    Replicas share one port (PgBouncer 1.18 takes one port for a host list), as
    they do on separate hosts; the local backend gives each its own loopback address.
    """

    listen_address: str
    primary_host: str
    primary_port: int
    replica_hosts: tuple[str, ...] = ()
    replica_port: int = 5432


def pgbouncer_ini(cfg: PlatformConfig, paths: PoolerPaths, targets: PoolerTargets,
                  tls: TlsFiles | None = None, auth_user: str | None = None) -> str:
    """pgbouncer.ini: a read-write entry for the primary and a read-only one over replicas.

    With `tls`, clients must use TLS and PgBouncer verifies the servers' certificates.
    With `auth_user`, users missing from the auth file are looked up through
    infra.render.pooler_auth.AUTH_QUERY (tenant roles only).
    """
    return render("pgbouncer.ini.j2", pooler=cfg.pooler, paths=paths, tls=tls,
                  auth_user=auth_user, auth_query=AUTH_QUERY,
                  database=cfg.postgres.database, listen_address=targets.listen_address,
                  primary_host=targets.primary_host, primary_port=targets.primary_port,
                  replica_hosts=targets.replica_hosts, replica_port=targets.replica_port)


def pooler_users(cfg: PlatformConfig, app_password: str, admin_password: str) -> dict[str, str]:
    """The auth file's users and their SCRAM verifiers (the server's own, for pass-through)."""
    return {cfg.postgres.app_role: scram.verifier(cfg.postgres.app_role, app_password),
            cfg.pooler.admin_user: scram.verifier(cfg.pooler.admin_user, admin_password)}


def userlist_txt(users: Mapping[str, str]) -> str:
    """PgBouncer's auth file; anything but a SCRAM verifier is refused, so no plaintext."""
    for user, verifier in users.items():
        if not verifier.startswith("SCRAM-SHA-256$") or '"' in verifier + user:
            raise RenderError(f"userlist entry for {user!r} is not a SCRAM-SHA-256 verifier; "
                              "the auth file never holds passwords")
    return render("userlist.txt.j2", users=sorted(users.items()))
