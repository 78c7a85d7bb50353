"""Running commands and watching processes on this machine: the one place that does.

PostgreSQL refuses to run as root: when euid is 0 every server command runs as
the ``postgres`` OS user (through ``runuser``) and the files it writes are
handed to that user. Every poll in hostctl goes through `wait_until`, every
pid file through `pid_from_file`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from infra.errors import ProcessError

logger = logging.getLogger(__name__)

SERVICE_USER = "postgres"
T = TypeVar("T")


def as_service_user() -> bool:
    return os.geteuid() == 0


def service_cmd(argv: Sequence[str]) -> list[str]:
    """Wrap a command so it runs as the service user when we are root."""
    if as_service_user():
        return ["runuser", "-u", SERVICE_USER, "--", *argv]
    return list(argv)


def run(argv: Sequence[str], *, what: str, timeout: float = 120.0,
        env: dict[str, str] | None = None, input_text: str | None = None,
        switch_user: bool = True) -> str:
    """Run a command as the service user (or, with `switch_user=False`, as this
    process's user: a command that switches users itself); raise ProcessError with its
    output."""
    cmd = service_cmd(argv) if switch_user else list(argv)
    logger.debug("running %s", " ".join(cmd))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
        env={**os.environ, **(env or {})}, input=input_text, check=False,
    )
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise ProcessError(f"{what} failed (exit {proc.returncode}): {out}")
    return proc.stdout


def spawn(argv: Sequence[str], *, log: Path, env: dict[str, str], cwd: Path,
          user: str | None) -> subprocess.Popen[bytes]:
    """Start a detached daemon that does not fork itself; output goes to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(  # argv is rendered, never a shell
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            cwd=str(cwd), start_new_session=True, user=user, group=user)


def wait_until(check: Callable[[], T | None], timeout: float,
               interval: float = 0.05) -> T | None:
    """Call `check` until it returns something other than None or False, or time runs out.

    Returns that value, or None on timeout: the caller raises its own error,
    which knows what was awaited and where its log is.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_from_file(path: Path, argv: Sequence[str] | None = None) -> int | None:
    """The live pid in a pid file's first line; with `argv`, only if it still runs that
    command (pids get reused after a crash)."""
    try:
        pid = int(path.read_text().splitlines()[0].strip())
    except (OSError, ValueError, IndexError):
        return None
    if argv is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        want = [a.encode() for a in argv]
        return pid if cmdline[: len(want)] == want else None
    return pid if pid_alive(pid) else None


def send(pid: int, sig: signal.Signals) -> None:
    """Signal a process; one that is already gone needs nothing."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def reap(pid: int) -> None:
    """Collect a child that exited, so it does not linger as a zombie with its pid."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, running_pid: Callable[[], int | None], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; `running_pid` says who runs now (pid file)."""
    send(pid, signal.SIGTERM)

    def gone() -> bool:
        reap(pid)
        return running_pid() != pid

    if not wait_until(gone, timeout):
        send(pid, signal.SIGKILL)
