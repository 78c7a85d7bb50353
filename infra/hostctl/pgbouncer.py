"""Run a PgBouncer process on this machine.

Shared by the local backend's dynamic provider and by the integration tests,
so tests start PgBouncer exactly the way `pulumi up` does. Like PostgreSQL it
runs as the ``postgres`` OS user when we are root.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.net import port_open
from infra.hostctl.proc import pid_from_file, run, send, wait_until

logger = logging.getLogger(__name__)

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class PgBouncer:
    """One pgbouncer.ini and the daemon started from it."""

    ini_path: Path
    pid_file: Path
    host: str
    port: int
    log_file: Path | None = None

    def pid(self) -> int | None:
        return pid_from_file(self.pid_file)

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon; a config PgBouncer rejects fails here, with its message."""
        if self.is_running():
            return
        self.pid_file.unlink(missing_ok=True)
        # Each client is a file descriptor: lift the soft limit to the hard one first.
        run(["/bin/sh", "-c", 'ulimit -S -n "$(ulimit -H -n)" && exec "$0" -d "$1"',
             PGBOUNCER, str(self.ini_path)],
            what=f"starting pgbouncer with {self.ini_path}", timeout=timeout)
        # PgBouncer listens before its daemonized child writes the pid file: wait for both,
        # so a reload or stop right after start finds the process.
        if wait_until(lambda: port_open(self.host, self.port) and self.pid() is not None,
                      timeout):
            return
        raise ProcessError(f"pgbouncer on {self.host}:{self.port} did not accept connections "
                           f"within {timeout:.0f}s; {self._log_tail()}")

    def reload(self) -> None:
        """Re-read pgbouncer.ini and the auth file without dropping clients (SIGHUP)."""
        pid = self.pid()
        if pid is None:
            raise ProcessError(f"pgbouncer of {self.ini_path} is not running; cannot reload")
        send(pid, signal.SIGHUP)

    def stop(self, timeout: float = 30.0) -> None:
        """Immediate shutdown (SIGTERM): clients are disconnected."""
        pid = self.pid()
        if pid is None:
            return
        send(pid, signal.SIGTERM)
        if wait_until(lambda: self.pid() is None, timeout):
            return
        raise ProcessError(f"pgbouncer (pid {pid}) did not stop within {timeout:.0f}s")

    def _log_tail(self) -> str:
        if self.log_file is None:
            return "no log file"
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            return f"log {self.log_file} unreadable"
        return f"log {self.log_file}: " + " | ".join(lines)
