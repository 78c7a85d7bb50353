"""pg-platform's own Python daemons on this machine (the TimescaleDB job runner, the backup
scheduler): start one detached, find it by its pid file, stop it.

A daemon is this checkout's interpreter running one module. It starts in a
session of its own (so `make up` ending never takes it down), writes its
output to a log file, and proves it is up by printing a marker line; its pid
file is checked against /proc/<pid>/cmdline, so a reused pid is never taken for
it. An optional secret reaches it once on its stdin: never a file, argv or the
environment.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.proc import pid_from_file, terminate, wait_until

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Daemon:
    """One supervised daemon: what it runs, where its pid and log are, how it says "up"."""

    what: str
    argv: Sequence[str]
    pid_file: Path
    log_file: Path
    started_marker: str
    cwd: Path
    stdin_text: str | None = field(default=None, repr=False)
    extra_env: dict[str, str] = field(default_factory=dict)

    def running_pid(self) -> int | None:
        return pid_from_file(self.pid_file, self.argv)

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Start it detached, hand it its stdin, and wait for its marker line in the log."""
        make_dir(self.pid_file.parent, 0o755)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(  # argv is built by the caller, never a shell
                list(self.argv), stdin=subprocess.PIPE, stdout=out, stderr=out,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **self.extra_env},
                cwd=str(self.cwd), start_new_session=True)
        assert proc.stdin is not None
        if self.stdin_text is not None:
            proc.stdin.write((self.stdin_text + "\n").encode())
        proc.stdin.close()
        write_file(self.pid_file, f"{proc.pid}\n", 0o644)

        def started() -> bool:
            if proc.poll() is not None:
                raise ProcessError(f"the {self.what} exited with {proc.returncode} at start "
                                   f"(log {self.log_file}):\n{self.tail(offset)}")
            return self.started_marker in self.tail(offset)

        if wait_until(started, timeout, 0.1):
            return proc.pid
        self.stop()
        raise ProcessError(f"the {self.what} did not start within {timeout:.0f}s "
                           f"(log {self.log_file}):\n{self.tail(offset)}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; a missing process is already stopped."""
        pid = self.running_pid()
        if pid is not None:
            terminate(pid, self.running_pid, timeout)
        self.pid_file.unlink(missing_ok=True)

    def tail(self, offset: int = 0) -> str:
        """The log from `offset` on, its last 2000 characters."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def stop_on_signals(stop: threading.Event) -> None:
    """In the daemon itself: SIGTERM (from `Daemon.stop`) and SIGINT end its loop cleanly."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
