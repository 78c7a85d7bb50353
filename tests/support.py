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

import psycopg

from infra import config, hostctl, render

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


@contextlib.contextmanager
def start_server(workdir: Path | None = None, **postgres: object) -> Iterator[RunningServer]:
    """Start a fresh server; `postgres` overrides `pg-platform:postgres` settings."""
    own_dir = workdir is None
    base = workdir or scratch_dir()
    port = hostctl.free_port()
    cfg = config.load({"postgres": {"port": port, **postgres}}, "test")
    server = hostctl.Server(data_dir=base / "data", port=port)
    password = secrets.token_urlsafe(18)
    server.initdb(SUPERUSER, password)
    socket_dir = hostctl.make_dir(base / "run", 0o755)
    paths = render.HostPaths(data_dir=str(server.data_dir), socket_dir=str(socket_dir))
    hostctl.write_file(server.data_dir / "postgresql.conf",
                       render.postgresql_conf(cfg, paths, timescaledb=False))
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
