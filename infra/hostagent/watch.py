#!/usr/bin/python3
"""pgp-watch: a dev container's main process, in place of prod's pg-platform-apply.timer.

`python3 watch.py DIR [APPLY_ARGS...]`: DIR is the container's bundle directory, bind-mounted
read-only from the machine running Pulumi (infra/backends/docker_delivery.py),
holding `bundle.json` and this program's applier, `apply.py`. It runs the
applier at once, again within seconds of a new bundle version, and every
minute otherwise (as prod's timer does: slots of a removed replica are dropped
once it has gone; a failed run is retried). The applier, not this loop, writes
the status file `pulumi up` waits for.

Each run starts `apply.py` afresh, so a newer applier written into DIR is the
one that runs. On SIGTERM (`docker stop`) it stops the bundle's services with
their own `stop` commands, so PostgreSQL shuts down cleanly. Python 3 stdlib
only; it imports nothing from the project.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 2.0
EVERY_SECONDS = 60.0     # an unchanged bundle is converged again this often
RETRY_SECONDS = 15.0     # after a failed run


def version(bundle_file: Path) -> str:
    """The bundle's version, or "" while it is missing or half-written."""
    try:
        return str(json.loads(bundle_file.read_text()).get("version") or "")
    except (OSError, ValueError):
        return ""


def apply_once(directory: Path, extra: list[str]) -> tuple[bool, str]:
    """One run of the applier; its one-line summary (never a file's content)."""
    proc = subprocess.run([sys.executable, str(directory / "apply.py"), "--bundle-file",
                           str(directory / "bundle.json"), *extra],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def stop_services(bundle_file: Path) -> None:
    """The bundle's services' `stop` commands, PgBouncer before PostgreSQL."""
    try:
        services: dict[str, Any] = json.loads(bundle_file.read_text()).get("services") or {}
    except (OSError, ValueError):
        return
    for name in sorted(services, reverse=True):
        cmd = services[name].get("stop")
        if cmd:
            subprocess.run(cmd, check=False)


class Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise Stop


def forget_status(bundle_file: Path) -> None:
    """A new container reports afresh: a status file an earlier one left says nothing."""
    try:
        where = json.loads(bundle_file.read_text()).get("report") or {}
    except (OSError, ValueError):
        return
    if where.get("file"):
        Path(where["file"]).unlink(missing_ok=True)


def watch(directory: Path, extra: list[str] | None = None, *, clock: Any = time.monotonic,
          sleep: Any = time.sleep, runs: int = -1) -> None:
    """Apply on start, on a new version and every minute; `runs` bounds it in tests."""
    bundle_file = directory / "bundle.json"
    forget_status(bundle_file)
    applied, due, last_line = "", 0.0, ""
    while runs != 0:
        now, current = clock(), version(bundle_file)
        if current and (current != applied or now >= due):
            ok, line = apply_once(directory, extra or [])
            if line and (line != last_line or not ok):
                print(line, flush=True)
            last_line = line
            applied, due = current, now + (EVERY_SECONDS if ok else RETRY_SECONDS)
            runs -= 1
        sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: watch.py BUNDLE_DIR [APPLY_ARGS...]", file=sys.stderr)
        return 2
    directory = Path(args[0])
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        watch(directory, args[1:])
    except Stop:
        stop_services(directory / "bundle.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
