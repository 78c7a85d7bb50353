"""A long-running server process started detached, with a pid file and a log.

etcd and Patroni stay in the foreground by design (they have no daemon mode),
so this module detaches them itself: a new session, stdout and stderr to the
log file, the pid written by us. When we are root the process runs as the
service user (setuid in the child, not through runuser, so the pid we record is
the server's own). A pid file is trusted only while /proc/PID/cmdline still
starts with our command, because pids get reused.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra import pgctl
from infra.errors import ProcessError


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll `check` until it is true; ProcessError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise ProcessError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)


@dataclass(frozen=True)
class Daemon:
    argv: tuple[str, ...]
    pid_file: Path
    log_file: Path
    cwd: str = "/"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        want = [a.encode() for a in self.argv]
        # A script (patroni) shows its interpreter first: /usr/bin/python3 /usr/bin/patroni ...
        ours = cmdline[: len(want)] == want or cmdline[1: 1 + len(want)] == want
        return pid if ours else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, env: dict[str, str] | None = None) -> int:
        """Start the process unless it runs; `env` must never carry a secret."""
        pid = self.pid()
        if pid is not None:
            return pid
        pgctl.make_dir(self.log_file.parent, 0o700)
        log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        pgctl.chown_service(self.log_file)
        user: dict[str, object] = {}
        if pgctl.as_service_user():
            ent = pwd.getpwnam(pgctl.SERVICE_USER)
            user = {"user": ent.pw_uid, "group": ent.pw_gid, "extra_groups": []}
            env = {**(env or {}), "HOME": ent.pw_dir, "USER": pgctl.SERVICE_USER}
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        try:
            proc = subprocess.Popen(
                list(self.argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.cwd, start_new_session=True, env={**base, **(env or {})},
                **user)  # type: ignore[call-overload]
        finally:
            os.close(log)
        pgctl.write_file(self.pid_file, f"{proc.pid}\n", 0o600)
        return int(proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not _alive(pid), timeout=timeout, what=f"pid {pid} exits")
        except ProcessError:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), timeout=5, what=f"pid {pid} exits (KILL)")
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
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True
