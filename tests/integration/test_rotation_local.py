"""Password rotation end to end on a real local stack: `rotation` 0 -> 1 through the engine.

After the second `up` every rotated role logs in with its new password (direct, through
PgBouncer, on the replica), the old passwords are refused, the replica streams again
with the new replicator password, and no login failed while the new ones were in use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.engine import ThrowawayStack
from tests.integration.conftest import cluster_ports
from tests.integration.test_replicas_engine_e2e import planned

pytestmark = pytest.mark.engine
ROTATED = ("primary_dsn", "app_dsn", "pooler_dsn", "pooler_admin_dsn", "monitor_dsn",
           "tenant_admin_dsn")


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ThrowawayStack, dict[str, Any]]]:
    port, pooler_port = cluster_ports()
    settings: dict[str, Any] = {"postgres": {"port": port, "max_connections": 60},
                                "replicas": 1, "pooler": {"port": pooler_port},
                                "monitoring": {"exporters": False}}
    s = ThrowawayStack("rotation", settings)
    try:
        s.init()
        s.up()
        yield s, settings
    finally:
        s.remove()


def _login(dsn: str) -> str:
    with psycopg.connect(dsn, prepare_threshold=None, autocommit=True,
                         connect_timeout=10) as conn:
        row = conn.execute("SHOW USERS" if conninfo_to_dict(dsn).get("dbname") == "pgbouncer"
                           else "SELECT current_user").fetchone()
    return str(row[0]) if row else ""


def _streaming(primary_dsn: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_replication "
                               "WHERE state = 'streaming'").fetchone()
        if row and row[0] == 1:
            return True
        time.sleep(1)
    return False


def _auth_failures(state: Path) -> list[str]:
    lines = []
    for log in state.rglob("*.log"):
        lines += [ln for ln in log.read_text(errors="replace").splitlines()
                  if "password authentication failed" in ln or "SASL authentication" in ln]
    return lines


def test_rotation_reaches_every_login_in_place(
        stack: tuple[ThrowawayStack, dict[str, Any]]) -> None:
    s, settings = stack
    before = s.outputs()
    assert _streaming(before["superuser_dsn"])
    failures_before = _auth_failures(s.state_dir)
    s.set_config({**settings, "rotation": 1})
    ops = planned(s.preview().stdout)
    # In place: the database, pooler and replica are updated; no server is replaced.
    assert "primary" not in ops and ops.get("replica-1") == "update", ops
    assert ops.get("database") == "update" and ops.get("pooler") == "update", ops
    s.up()
    after = s.outputs()
    # No process of the platform (replica, pooler) failed a login during the rotation.
    assert _auth_failures(s.state_dir) == failures_before
    for name in ROTATED:
        old, new = conninfo_to_dict(before[name]), conninfo_to_dict(after[name])
        assert old["password"] != new["password"], name
        assert _login(after[name]), name
        with pytest.raises(psycopg.OperationalError):
            _login(before[name])
    for old, new in zip(before["replica_dsns"], after["replica_dsns"], strict=True):
        assert _login(new) == "app"
        with pytest.raises(psycopg.OperationalError):
            _login(old)
    # The replica restarted with the new replicator password in its passfile and streams.
    assert _streaming(after["superuser_dsn"])
    # After the old-password probes, the new credentials log in without a single failure.
    failures_before_logins = _auth_failures(s.state_dir)
    # The logs do record failures: each old-password probe left one.
    assert len(failures_before_logins) > len(failures_before)
    for name in ROTATED:
        _login(after[name])
    assert _auth_failures(s.state_dir) == failures_before_logins
    # A second preview: the rotation is done, nothing left to change.
    proc = s.preview("--expect-no-changes", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
