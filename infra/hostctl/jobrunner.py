"""pg-platform's TimescaleDB job runner as a daemon on this machine: start, find, stop.

`python -m infra.timescaledb run-jobs --dsn-stdin` (infra/timescaledb/jobs.py).
The owner DSN reaches it on its stdin, once: never a file, argv or the
environment. It runs as the user running `pulumi up`: it is a client, not a
server, and it needs this checkout's virtualenv.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from infra.errors import ProcessError
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.proc import pid_from_file, terminate, wait_until

START_TIMEOUT = 15.0
STARTED = "TimescaleDB job runner started"


def pid_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / "timescaledb-job-runner.pid"


def log_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / "timescaledb-job-runner.log"


def argv(props: dict[str, Any]) -> list[str]:
    return [str(props["python"]), "-m", "infra.timescaledb", "run-jobs", "--dsn-stdin",
            "--mode", str(props["mode"]), "--interval", str(props["interval"])]


def running_pid(props: dict[str, Any]) -> int | None:
    return pid_from_file(pid_file(props), argv(props))


def _tail(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def stop_on_signals(stop: threading.Event) -> None:
    """In the runner itself: SIGTERM (from `stop`) and SIGINT end its loop cleanly."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def start(props: dict[str, Any]) -> int:
    """Start the runner detached, hand it the DSN, and wait for its first log line."""
    make_dir(Path(props["run_dir"]), 0o755)
    log = log_file(props)
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # argv is built here, never a shell
            argv(props), stdin=subprocess.PIPE, stdout=out, stderr=out,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd=str(props["project_dir"]), start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write((str(props["dsn"]) + "\n").encode())
    proc.stdin.close()
    write_file(pid_file(props), f"{proc.pid}\n", 0o644)

    def started() -> bool:
        if proc.poll() is not None:
            raise ProcessError(f"the TimescaleDB job runner exited with {proc.returncode} "
                               f"at start (log {log}):\n{_tail(log, offset)}")
        return STARTED in _tail(log, offset)

    if wait_until(started, START_TIMEOUT, 0.1):
        return proc.pid
    stop(props)
    raise ProcessError(f"the TimescaleDB job runner did not start within "
                       f"{START_TIMEOUT:.0f}s (log {log}):\n{_tail(log, offset)}")


def stop(props: dict[str, Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; a missing process is already stopped."""
    pid = running_pid(props)
    if pid is not None:
        terminate(pid, lambda: running_pid(props), timeout)
    pid_file(props).unlink(missing_ok=True)
