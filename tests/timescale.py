"""TimescaleDB for the test suite: both paths, and never a skip.

The suite runs the SQL and platform tests twice: with TimescaleDB installed
and preloaded, and with it installed but not preloaded (the SQL's fallback).
When TimescaleDB is not installed at all, the suite installs it the way
`make up` does (scripts/timescaledb, building the tarball named by
PGP_TIMESCALEDB_SOURCE, defaulted like the Makefile's), and fails with the
reason when that cannot work: a present-path test that skipped would prove
nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from infra.timescaledb.presence import installed

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("timescaledb", "fallback")
_VENDOR = ROOT.parent / "shared" / "vendor" / "timescaledb-2.28.3.tar.gz"
_checked: list[bool] = []


def ensure_installed() -> None:
    """Install TimescaleDB once per session when it is missing, or raise saying why."""
    if _checked or installed():
        _checked.append(True)
        return
    env = dict(os.environ)
    if not env.get("PGP_TIMESCALEDB_SOURCE") and _VENDOR.exists():
        env["PGP_TIMESCALEDB_SOURCE"] = str(_VENDOR)
    proc = subprocess.run([str(ROOT / "scripts" / "timescaledb"), "install"], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0 or not installed():
        raise RuntimeError(
            "TimescaleDB is not installed and scripts/timescaledb could not install it "
            f"(PGP_TIMESCALEDB_SOURCE={env.get('PGP_TIMESCALEDB_SOURCE', '')!r}): "
            + (proc.stderr.strip() or proc.stdout.strip())[-800:])
    _checked.append(True)
