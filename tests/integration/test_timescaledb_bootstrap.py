"""scripts/timescaledb: refuses unverified source, falls back when there is none.

Runs against a PostgreSQL major this machine does not have (PGP_PG_MAJOR=99),
so TimescaleDB is "missing" and nothing is built or installed: every case
below stops before the build. The real build and install is exercised by the
suite's own setup (tests/timescale.py) and measured in docs/timescaledb.md.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install(**env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PGP_PG_MAJOR": "99", "PGP_TIMESCALEDB_APT_TIMEOUT": "2", **env}
    return subprocess.run([str(ROOT / "scripts" / "timescaledb"), "install"], env=full,
                          capture_output=True, text=True, timeout=60, check=False)


def tarball(tmp_path: Path) -> Path:
    """A tarball of our own, so no test depends on the vendored file being there."""
    src = tmp_path / "timescaledb-9.9.9.tar.gz"
    subprocess.run(["tar", "-czf", str(src), "-C", str(ROOT), "README.md"], check=True)
    return src


def test_a_wrong_sha256_is_refused_and_fails_bootstrap(tmp_path: Path) -> None:
    src = tarball(tmp_path)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  {src.name}\n")
    proc = install(PGP_TIMESCALEDB_SOURCE=str(src))
    assert proc.returncode == 1
    assert f"PGP_TIMESCALEDB_SOURCE={src}: sha256 " in proc.stderr
    assert f"expected {'0' * 64}; refusing to build it" in proc.stderr


def test_a_tarball_without_a_checksum_is_refused(tmp_path: Path) -> None:
    src = tarball(tmp_path)
    proc = install(PGP_TIMESCALEDB_SOURCE=str(src))
    assert proc.returncode == 1
    assert "no SHA256SUMS beside it and no PGP_TIMESCALEDB_SHA256" in proc.stderr


def test_no_source_means_the_fallback_said_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGP_TIMESCALEDB_SOURCE"}
    proc = subprocess.run([str(ROOT / "scripts" / "timescaledb"), "install"],
                          env={**env, "PGP_PG_MAJOR": "99", "PGP_TIMESCALEDB_APT_TIMEOUT": "2"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "absent: fallback"
    assert proc.stderr.count("the platform runs without it") == 1

