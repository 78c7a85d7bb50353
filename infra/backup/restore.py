"""Point-in-time restore into a new data directory, started on a free port.

The restored server never touches the source: it gets its own port and socket
directory, and WAL archiving is switched off, so a promoted copy cannot push a
new timeline into the source's repository.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from infra import hostctl
from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.pgbackrest import PgBackRest
from infra.render.backup import restore_settings
from infra.roles import BREAK_GLASS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """A restored, running copy."""

    server: hostctl.Server
    workdir: Path
    target: str | None

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "run"

    def local_dsn(self, source_dsn: str) -> str:
        """The bootstrap superuser, through the copy's own socket directory (peer).

        The copy runs with the configuration of its backup, which may predate the
        source's TLS settings; a Unix socket needs none and never leaves the host.
        Its pg_hba.conf admits only the break-glass superuser there, by peer.
        """
        return _with(source_dsn, host=str(self.socket_dir), port=str(self.server.port),
                     sslmode="prefer", sslrootcert=None, user=BREAK_GLASS, password=None)

    def tcp_dsn(self, source_dsn: str) -> str:
        """How people reach the copy over TCP (TLS when its configuration has it)."""
        return _with(source_dsn, host=self.server.host, port=str(self.server.port),
                     sslmode="prefer", sslrootcert=None)

    def remove(self) -> None:
        self.server.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _with(dsn: str, **changes: str | None) -> str:
    """A conninfo with some parameters replaced, and those set to None removed."""
    return conninfo(dsn, **changes)


def format_target(when: datetime) -> str:
    """A recovery_target_time PostgreSQL parses exactly: UTC, microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def new_workdir(parent: Path) -> Path:
    """restores/<UTC time>-<n>: a directory that did not exist before."""
    hostctl.make_dir(parent, 0o755)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = parent / f"{stamp}-{n}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        path.chmod(0o755)
        hostctl.chown_service(path)
        return path
    raise ProcessError(f"no free restore directory under {parent}")


def restore(pgbr: PgBackRest, workdir: Path, *, target: str | None,
            host: str = "127.0.0.1", port: int | None = None) -> Restored:
    """Restore the stanza (to `target`, a timestamp, when given) and start the copy."""
    data_dir = workdir / "data"
    pgbr.restore(data_dir, target=target)
    port = port or hostctl.free_port(host)
    socket_dir = hostctl.make_dir(workdir / "run", 0o755)
    auto = data_dir / "postgresql.auto.conf"
    hostctl.write_file(auto, auto.read_text() + restore_settings(host, port, str(socket_dir)))
    server = hostctl.Server(data_dir=data_dir, port=port, host=host)
    try:
        server.start(timeout=600)
    except ProcessError:
        raise ProcessError(f"the restored server in {data_dir} did not start; "
                           f"{_log_tail(server)}") from None
    return Restored(server=server, workdir=workdir, target=target)


def wait_promoted(restored: Restored, dsn: str, timeout: float = 300.0) -> None:
    """Wait until recovery reached its target and the copy accepts writes."""
    def promoted() -> bool:
        if not restored.server.is_running():
            raise ProcessError(f"the restored server stopped during recovery; "
                               f"{_log_tail(restored.server)}")
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.OperationalError:
            return False
        return bool(row and row[0] is False)

    if not hostctl.wait_until(promoted, timeout, 0.1):
        raise ProcessError(f"the restored server was still recovering after {timeout:.0f}s; "
                           f"{_log_tail(restored.server)}")


def _log_tail(server: hostctl.Server, lines: int = 6) -> str:
    try:
        tail = server.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"log {server.log_file} unreadable"
    return f"log {server.log_file}: " + " | ".join(tail)
