"""A foreground server (etcd, Patroni, HAProxy) started detached, with a pid file and a log.

etcd and Patroni stay in the foreground by design (they have no daemon mode),
so this module detaches them itself: a new session, stdout and stderr to the
log file, the pid written by us. When we are root the process runs as the
service user (setuid in the child, not through runuser, so the pid we record is
the server's own). A pid file is trusted only while /proc/PID/cmdline still
starts with our command, because pids get reused.
"""

from __future__ import annotations

import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.files import chown_service, make_dir, write_file
from infra.hostctl.proc import (
    SERVICE_USER,
    as_service_user,
    pid_alive,
    pid_from_file,
    reap,
    send,
    spawn,
    wait_until,
)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str,
             interval: float = 0.1) -> None:
    """`wait_until`, raising ProcessError naming `what` when time runs out."""
    if wait_until(lambda: check() or None, timeout, interval) is None:
        raise ProcessError(f"{what}: not reached within {timeout:.0f}s")


@dataclass(frozen=True)
class ForegroundServer:
    argv: tuple[str, ...]
    pid_file: Path
    log_file: Path
    cwd: str = "/"

    def pid(self) -> int | None:
        pid = pid_from_file(self.pid_file)
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        want = [a.encode() for a in self.argv]
        # A script (patroni) shows its interpreter first: /usr/bin/python3 /usr/bin/patroni ...
        ours = cmdline[: len(want)] == want or cmdline[1: 1 + len(want)] == want
        return pid if ours and _alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, env: dict[str, str] | None = None) -> int:
        """Start the process unless it runs; `env` must never carry a secret."""
        pid = self.pid()
        if pid is not None:
            return pid
        make_dir(self.log_file.parent, 0o700)
        if not self.log_file.exists():
            write_file(self.log_file, "", 0o600)
        chown_service(self.log_file)
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        user = None
        if as_service_user():
            ent = pwd.getpwnam(SERVICE_USER)
            base.update(HOME=ent.pw_dir, USER=SERVICE_USER)
            user = SERVICE_USER
        proc = spawn(self.argv, log=self.log_file, env={**base, **(env or {})},
                     cwd=Path(self.cwd), user=user)
        write_file(self.pid_file, f"{proc.pid}\n", 0o600)
        return int(proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        pid = self.pid()
        if pid is not None:
            send(pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        pid = self.pid()
        if pid is None:
            return
        send(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not _alive(pid), timeout=timeout, what=f"pid {pid} exits")
        except ProcessError:
            send(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), timeout=5, what=f"pid {pid} exits (KILL)")
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 10) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log_file})"
        return " | ".join(tail)


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (our own children become zombies)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        reap(pid)
        return False
    return pid_alive(pid)
