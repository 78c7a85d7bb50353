"""A harness killed with SIGKILL mid-boot leaves no mount, loop device, link or process.

The harness runs in a child process and is killed while the primary's user-data
runs with the data volume mounted (the worst moment: a mounted XFS on a loop
device, PostgreSQL or initdb running, moto and socat up). The watchdog
(tests/hosts/cleanup.py) must then remove everything the run's ledger lists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.hosts import cleanup
from tests.hosts.tier import ROOT, RUNS

CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from tests.hosts.tier import Tier
t = Tier()
print(t.run_id, flush=True)
t.up()
"""


def _mounted_anywhere(text: str) -> list[str]:
    """Mount entries naming `text`, in every process's mount namespace."""
    found = []
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            lines = mountinfo.read_text().splitlines()
        except OSError:
            continue
        found += [f"{mountinfo.parent.name}: {ln}" for ln in lines if text in ln]
    return found


def _volume_mounted(items: list[dict[str, object]]) -> bool:
    inits = [int(str(i["pid"])) for i in items
             if i["kind"] == "process" and i["what"] == "primary init"]
    for pid in inits:
        try:
            if "/var/lib/postgresql " in Path(f"/proc/{pid}/mountinfo").read_text():
                return True
        except OSError:
            pass
    return False


def test_a_killed_harness_leaves_nothing_behind() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    run_dir = RUNS / run_id
    ledger = run_dir / "ledger.jsonl"
    try:
        deadline = time.monotonic() + 600
        while not _volume_mounted(cleanup.Ledger(ledger).items()):
            assert proc.poll() is None, "the harness ended before the volume was mounted"
            assert time.monotonic() < deadline, "the primary never mounted its volume"
            time.sleep(0.2)
        items = cleanup.Ledger(ledger).items()
        assert _mounted_anywhere(str(run_dir)), "expected the host's overlay mounted"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 90
        while ledger.exists():
            assert time.monotonic() < deadline, \
                f"the watchdog did not sweep in 90s: {ledger.read_text()}"
            time.sleep(0.2)
        alive = [i for i in items if i["kind"] == "process"
                 and cleanup.alive(int(str(i["pid"])), str(i["started"]))]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
        loops = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                               capture_output=True, text=True, check=True).stdout
        assert not alive, json.dumps(alive)
        assert f"pgp{run_id}" not in links, links
        assert str(run_dir) not in loops, loops
        assert not _mounted_anywhere(str(run_dir))
        assert {i["kind"] for i in items} >= {"process", "link", "loop"}
    finally:
        if proc.poll() is None:
            proc.kill()
        if ledger.exists():
            cleanup.sweep(ledger)
        shutil.rmtree(run_dir, ignore_errors=True)
