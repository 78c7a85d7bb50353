"""Prometheus exporter daemons on this machine: start detached, find, stop.

Secrets (a DSN, the console password) reach the process only through its
environment, never its argv or a log line: `log_tail` scrubs them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

from infra.errors import ProcessError
from infra.hostctl.files import make_dir, service_ids, write_file
from infra.hostctl.net import port_open
from infra.hostctl.proc import (
    SERVICE_USER,
    as_service_user,
    pid_from_file,
    spawn,
    terminate,
    wait_until,
)

logger = logging.getLogger(__name__)

START_TIMEOUT = 20.0
BIND_ATTEMPTS = 3


def _settled(proc: subprocess.Popen[bytes], props: dict[str, Any]) -> bool:
    return proc.poll() is not None or _listening(props)


def _listening(props: dict[str, Any]) -> bool:
    return port_open(props["listen"], int(props["port"]))


def _lost_the_port(log: Path, offset: int) -> bool:
    """The run's own log lines say its listening port was in use (Go's and Python's words)."""
    with open(log, "rb") as f:
        f.seek(offset)
        return "address already in use" in f.read().decode(errors="replace").lower()


def pid_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / f"{props['name']}.pid"


def log_file(props: dict[str, Any]) -> Path:
    return Path(props["run_dir"]) / f"{props['name']}.log"


def running_pid(props: dict[str, Any]) -> int | None:
    """The exporter's pid when it is alive and still runs our command (pids get reused)."""
    return pid_from_file(pid_file(props), props["argv"])


def _scrub(text: str, secrets: dict[str, str]) -> str:
    for value in secrets.values():
        if value:
            text = text.replace(value, "***")
            for line in value.splitlines():  # a passfile line's password field
                pw = line.rsplit(":", 1)[-1]
                if len(pw) >= 8:
                    text = text.replace(pw, "***")
    return text


def log_tail(props: dict[str, Any], lines: int = 8) -> str:
    try:
        tail = log_file(props).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return _scrub("\n".join(tail), {**(props.get("secret_env") or {}),
                                    **(props.get("secret_files") or {})})


def start(props: dict[str, Any]) -> int:
    """Write the exporter's files, start it detached, and wait until it listens."""
    if port_open(props["listen"], int(props["port"])):
        raise ProcessError(
            f"exporter {props['name']}: {props['listen']}:{int(props['port'])} is already in use "
            "by another process; choose free ports with pg-platform:monitoring."
            "postgres_exporter_port / pgbouncer_exporter_port")
    run_dir = make_dir(Path(props["run_dir"]), 0o755)
    for path, text in sorted((props.get("files") or {}).items()):
        write_file(Path(path), text, 0o600)
    # Passwords: 0600 files the service user owns, named by `env` (never the secret itself).
    for path, text in sorted((props.get("secret_files") or {}).items()):
        make_dir(Path(path).parent, 0o700)
        write_file(Path(path), text, 0o600)
    log = log_file(props)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(props.get("env") or {}),
           **(props.get("secret_env") or {})}
    user: str | None = SERVICE_USER if as_service_user() else None
    log.touch(mode=0o600)
    if user:
        os.chown(log, *service_ids())
    for attempt in range(1, BIND_ATTEMPTS + 1):
        offset = log.stat().st_size
        proc = spawn(props["argv"], log=log, env=env, cwd=run_dir, user=user)
        write_file(pid_file(props), f"{proc.pid}\n", 0o644)
        wait_until(partial(_settled, proc, props), START_TIMEOUT, 0.1)
        if proc.poll() is None:
            if _listening(props):
                logger.info("exporter %s listens on %s:%s", props["name"], props["listen"],
                            props["port"])
                return proc.pid
            break  # alive but not listening in time
        if attempt == BIND_ATTEMPTS or not _lost_the_port(log, offset):
            raise ProcessError(f"exporter {props['name']} exited with {proc.returncode} at "
                               f"start (log {log}):\n{log_tail(props)}")
        # The port is in the kernel's ephemeral range, so a short-lived client connection
        # can hold it as its local port for a moment: wait and start it again.
        logger.warning("exporter %s: %s:%s was briefly taken; starting it again",
                       props["name"], props["listen"], props["port"])
        time.sleep(1.0)
    stop(props)
    raise ProcessError(f"exporter {props['name']} did not listen on {props['listen']}:"
                       f"{props['port']} within {START_TIMEOUT:.0f}s (log {log}):\n"
                       f"{log_tail(props)}")


def stop(props: dict[str, Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; a missing process is already stopped."""
    pid = running_pid(props)
    if pid is not None:
        terminate(pid, lambda: running_pid(props), timeout)
        # An exiting process drops its memory (and so its cmdline) before its sockets:
        # wait for the port too, so a restart on the same port does not find it taken.
        wait_until(lambda: not port_open(props["listen"], props["port"]), timeout)
    pid_file(props).unlink(missing_ok=True)
