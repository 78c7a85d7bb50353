"""pg-platform's TimescaleDB job runner as a daemon on this machine: start, find, stop.

`python -m infra.timescaledb run-jobs --dsn-stdin` (infra/timescaledb/jobs.py).
The owner DSN reaches it on its stdin, once: never a file, argv or the
environment. It runs as the user running `pulumi up`: it is a client, not a
server, and it needs this checkout's virtualenv. infra/hostctl/daemon.py
starts and stops it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.hostctl.daemon import Daemon
from infra.hostctl.daemon import stop_on_signals as stop_on_signals

STARTED = "TimescaleDB job runner started"


def pid_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / "timescaledb-job-runner.pid"


def log_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / "timescaledb-job-runner.log"


def argv(props: dict[str, Any]) -> list[str]:
    return [str(props["python"]), "-m", "infra.timescaledb", "run-jobs", "--dsn-stdin",
            "--mode", str(props["mode"]), "--interval", str(props["interval"])]


def daemon(props: dict[str, Any]) -> Daemon:
    return Daemon(what="TimescaleDB job runner", argv=argv(props), pid_file=pid_file(props),
                  log_file=log_file(props), started_marker=STARTED,
                  cwd=Path(props.get("project_dir") or "."), stdin_text=str(props.get("dsn") or ""))


def running_pid(props: dict[str, Any]) -> int | None:
    return daemon(props).running_pid()


def start(props: dict[str, Any]) -> int:
    """Start the runner detached, hand it the DSN, and wait for its first log line."""
    return daemon(props).start()


def stop(props: dict[str, Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; a missing process is already stopped."""
    daemon(props).stop(timeout)
