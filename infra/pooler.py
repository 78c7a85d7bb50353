"""Run a PgBouncer process on this machine.

Shared by the local backend's dynamic provider and by the integration tests,
so tests start PgBouncer exactly the way `pulumi up` does. Like PostgreSQL it
runs as the ``postgres`` OS user when we are root.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from infra import pgctl
from infra.errors import ProcessError

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
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon; a config PgBouncer rejects fails here, with its message."""
        if self.is_running():
            return
        self.pid_file.unlink(missing_ok=True)
        # Each client is a file descriptor: lift the soft limit to the hard one first.
        pgctl.run(["/bin/sh", "-c", 'ulimit -S -n "$(ulimit -H -n)" && exec "$0" -d "$1"',
                   PGBOUNCER, str(self.ini_path)],
                  what=f"starting pgbouncer with {self.ini_path}", timeout=timeout)
        # PgBouncer listens before its daemonized child writes the pid file: wait for both,
        # so a reload or stop right after start finds the process.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pgctl.port_open(self.host, self.port) and self.pid() is not None:
                return
            time.sleep(0.05)
        raise ProcessError(f"pgbouncer on {self.host}:{self.port} did not accept connections "
                           f"within {timeout:.0f}s; {self._log_tail()}")

    def reload(self) -> None:
        """Re-read pgbouncer.ini and the auth file without dropping clients (SIGHUP)."""
        pid = self.pid()
        if pid is None:
            raise ProcessError(f"pgbouncer of {self.ini_path} is not running; cannot reload")
        os.kill(pid, signal.SIGHUP)

    def stop(self, timeout: float = 30.0) -> None:
        """Immediate shutdown (SIGTERM): clients are disconnected."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                return
            time.sleep(0.05)
        raise ProcessError(f"pgbouncer (pid {pid}) did not stop within {timeout:.0f}s")

    def _log_tail(self) -> str:
        if self.log_file is None:
            return "no log file"
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            return f"log {self.log_file} unreadable"
        return f"log {self.log_file}: " + " | ".join(lines)
