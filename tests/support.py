"""Real PostgreSQL servers for tests and benchmarks.

Servers are started exactly as the local backend starts them (infra.hostctl and
infra.render), on a free loopback port, in a throw-away directory the service
user can reach. Nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from infra import config, hostctl, render
from tests import ports

SUPERUSER = "pgp_admin"


@dataclass
class RunningServer:
    server: hostctl.Server
    password: str
    workdir: Path

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return self.server.dsn(SUPERUSER, self.password, dbname)


def scratch_dir(prefix: str = "pgp-test-") -> Path:
    """A directory under /tmp that the postgres OS user can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def write_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3",
                                                     "127.0.0.4", "localhost",
                                                     "127.0.0.2,127.0.0.3")
              ) -> render.TlsFiles:
    """A CA and a server certificate for `hosts`, written as the TLS files provider does.

    pg_hba.conf admits TLS logins only (hostssl), so every test server has TLS.
    """
    from infra import tls
    from infra.tls import TlsFilesProvider

    ca = tls.make_ca("pg-platform test CA")
    server = tls.make_server_cert(ca, "pg-platform test server", list(hosts))
    files = render.TlsFiles(cert_file=str(directory / "server.crt"),
                            key_file=str(directory / "server.key"),
                            ca_file=str(directory / "ca.crt"))
    TlsFilesProvider._write({**vars(files), "ca_cert": ca.cert_pem,
                             "server_cert": server.cert_pem, "server_key": server.key_pem})
    return files


@contextlib.contextmanager
def start_server(workdir: Path | None = None, *, timescaledb: bool = False,
                 **postgres: object) -> Iterator[RunningServer]:
    """Start a fresh server; `postgres` overrides `pg-platform:postgres` settings.

    `timescaledb` preloads TimescaleDB (it must be installed: see
    tests.timescale.ensure_installed); without it an installed TimescaleDB is
    not preloaded, which is the SQL's fallback path.
    """
    own_dir = workdir is None
    base = workdir or scratch_dir()
    port = ports.free_port()
    cfg = config.load({"postgres": {"port": port, **postgres}}, "test")
    server = hostctl.Server(data_dir=base / "data", port=port)
    password = secrets.token_urlsafe(18)
    server.initdb(SUPERUSER, password)
    socket_dir = hostctl.make_dir(base / "run", 0o755)
    paths = render.HostPaths(data_dir=str(server.data_dir), socket_dir=str(socket_dir))
    tls_files = write_tls(base / "tls")
    hostctl.write_file(server.data_dir / "postgresql.conf",
                       render.postgresql_conf(cfg, paths, timescaledb=timescaledb,
                                              tls=tls_files))
    hostctl.write_file(server.data_dir / "pg_hba.conf", render.pg_hba_conf(cfg))
    try:
        server.start()
        yield RunningServer(server=server, password=password, workdir=base)
    finally:
        server.remove()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


@dataclass
class FreshDatabase:
    name: str
    dsn: str
    server: RunningServer


@contextlib.contextmanager
def fresh_database(running: RunningServer) -> Iterator[FreshDatabase]:
    """A new empty database, dropped afterwards (with any connections to it)."""
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(running.superuser_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield FreshDatabase(name=name, dsn=running.superuser_dsn(name), server=running)
    finally:
        with psycopg.connect(running.superuser_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def session(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection without server-side prepares (PgBouncer's transaction
    pooling hands each statement to any server connection)."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None,
                         connect_timeout=15) as conn:
        yield conn


def one(dsn: str, query: str, params: Any = None) -> Any:
    """The first column of the first row, or None."""
    with session(dsn) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None
