"""Through the real engine: replicas 2 -> 1 and a pooler setting, each seen in preview first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.engine import ThrowawayStack
from tests.integration.conftest import cluster_ports

pytestmark = pytest.mark.engine


def planned(preview_stdout: str) -> dict[str, str]:
    """Resource name -> planned operation, from the blocks of `pulumi preview --diff`."""
    pattern = (r"\((create|update|delete|replace|create-replacement|delete-replaced)\)\s*\n"
               r"(?:\s*\[id=[^\]]*\]\s*\n)?\s*\[urn=[^\]]*::([^\]]+)\]")
    return {m.group(2): m.group(1) for m in re.finditer(pattern, preview_stdout)}


def slots(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")}


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ThrowawayStack, dict[str, Any]]]:
    port, pooler_port = cluster_ports()
    settings: dict[str, Any] = {"postgres": {"port": port, "max_connections": 60},
                                "replicas": 2,
                                "pooler": {"port": pooler_port, "default_pool_size": 10},
                                # Exporters listen on fixed ports; not what this test is about.
                                "monitoring": {"exporters": False}}
    s = ThrowawayStack("clusterx", settings)
    try:
        s.init()
        s.up()
        yield s, settings
    finally:
        s.remove()


def test_replicas_two_to_one_and_a_pooler_setting(
        stack: tuple[ThrowawayStack, dict[str, Any]]) -> None:
    s, settings = stack
    out = s.outputs()
    assert len(out["replica_dsns"]) == 2
    assert slots(out["primary_dsn"]) == {"replica_1", "replica_2"}
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    s.set_config({**settings, "replicas": 1})
    ops = planned(s.preview().stdout)
    assert ops.get("replica-2") == "delete" and "replica-1" not in ops, ops
    assert ops.get("pooler") == "update" and "primary" not in ops, ops
    s.up()
    assert slots(out["primary_dsn"]) == {"replica_1"}
    assert len(s.outputs()["replica_dsns"]) == 1

    s.set_config({**settings, "replicas": 1,
                  "pooler": {**settings["pooler"], "default_pool_size": 12}})
    preview = s.preview()
    assert planned(preview.stdout) == {"pooler": "update"}, preview.stdout
    assert "default_pool_size = 12" in preview.stdout
    s.up()
    assert s.preview("--expect-no-changes", check=False).returncode == 0
