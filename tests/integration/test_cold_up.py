"""Ten cold `up`s in a row with two replicas: the replica clones never lose the race.

A cold up makes both replicas (each a pg_basebackup through its own slot) while
the first full backup runs its immediate checkpoints. On PostgreSQL 15 a slot
that reserved WAL during a checkpoint could be invalidated by it, and the
clone then failed with "requested WAL segment ... has already been removed".
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.engine import ThrowawayStack
from tests.integration.conftest import cluster_ports

pytestmark = pytest.mark.engine

COLD_UPS = 10


@pytest.fixture
def stack() -> Iterator[ThrowawayStack]:
    port, pooler_port = cluster_ports()
    s = ThrowawayStack("coldup", {"postgres": {"port": port, "max_connections": 60},
                                  "replicas": 2,
                                  "pooler": {"port": pooler_port, "default_pool_size": 10},
                                  "monitoring": {"exporters": False}})
    try:
        s.init()
        yield s
    finally:
        s.remove()


def test_ten_cold_ups_with_two_replicas_all_succeed(stack: ThrowawayStack) -> None:
    for attempt in range(1, COLD_UPS + 1):
        proc = stack.up()
        assert proc.returncode == 0, f"cold up {attempt} failed"
        out = stack.outputs()
        with psycopg.connect(out["primary_dsn"], autocommit=True) as conn:
            rows = conn.execute("SELECT slot_name, active, wal_status FROM pg_replication_slots "
                                "ORDER BY slot_name").fetchall()
        assert rows == [("replica_1", True, "reserved"), ("replica_2", True, "reserved")], (
            f"cold up {attempt}: {rows}")
        stack.destroy()
