"""Everything the host tier makes outside its namespaces, recorded as it is made, and
removed even when the harness is killed (stdlib only: the watchdog runs it alone).

Mounts need no entry: every mount of a host (overlay, proc, dev, the data volume)
lives in that host's own mount namespace and goes with its last process. What does
outlive a killed harness is recorded in the run's ledger (one JSON line per item):
processes (pid plus start time, so a reused pid is never signalled), network links
and loop devices. `sweep` removes them in that order; a watchdog process, started
in its own session when a run begins, sweeps as soon as the harness process dies,
so a `kill -9` mid-step leaves nothing behind (tests/hosts/test_cleanup.py).

    python tests/hosts/cleanup.py watch <harness pid> <ledger>
    python tests/hosts/cleanup.py sweep <ledger>
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: when the process started (clock ticks since boot)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, started: str) -> bool:
    return bool(started) and start_time(pid) == started


class Ledger:
    """An append-only file of what this run made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def add(self, kind: str, **item: object) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps({"kind": kind, **item}) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def process(self, pid: int, what: str) -> None:
        self.add("process", pid=pid, started=start_time(pid), what=what)

    def items(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def _kill(items: list[dict[str, object]]) -> None:
    procs = [(int(str(i["pid"])), str(i["started"])) for i in items if i["kind"] == "process"]
    for pid, started in procs:
        if alive(pid, started):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(alive(p, s) for p, s in procs) and time.monotonic() < deadline:
        time.sleep(0.1)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def sweep(ledger: Path) -> list[str]:
    """Remove what the ledger lists; returns what could not be removed (empty when done)."""
    items = Ledger(ledger).items()
    _kill(items)
    left = []
    for item in reversed(items):
        if item["kind"] == "link":
            name = str(item["name"])
            if _run("ip", "link", "show", name).returncode == 0:
                r = _run("ip", "link", "del", name)
                if r.returncode:
                    left.append(f"link {name}: {r.stderr.strip()}")
    for item in items:
        if item["kind"] == "loop":
            dev, backing = str(item["device"]), str(item["backing"])
            # Only the loop device this run attached over this run's file.
            for _ in range(50):
                listing = _run("losetup", "-n", "-O", "NAME", "-j", backing).stdout.split()
                if dev not in listing:
                    break
                _run("losetup", "-d", dev)
                time.sleep(0.2)
            else:
                left.append(f"loop {dev} over {backing} is still attached")
    if not left:
        ledger.unlink(missing_ok=True)
    return left


def watch(harness_pid: int, ledger: Path) -> None:
    """Sweep when the harness dies; leave quietly when the harness swept itself."""
    started = start_time(harness_pid)
    while alive(harness_pid, started) and ledger.exists():
        time.sleep(0.5)
    if ledger.exists():
        left = sweep(ledger)
        if left:
            print("host tier watchdog: left behind: " + "; ".join(left), file=sys.stderr)
            sys.exit(1)


def start_watchdog(ledger: Path) -> subprocess.Popen[bytes]:
    """The watchdog for this process, in its own session so a killed group spares it."""
    return subprocess.Popen([sys.executable, __file__, "watch", str(os.getpid()), str(ledger)],
                            start_new_session=True, stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        watch(int(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "sweep":
        remaining = sweep(Path(sys.argv[2]))
        print("\n".join(remaining))
        sys.exit(1 if remaining else 0)
