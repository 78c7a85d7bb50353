"""Streaming replication: each replica streams through its own active slot, and keeps up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from infra import config
from tests.infra.conftest import as_monitor, connect, stats_dsn


def test_every_replica_streams_through_an_active_slot(cfg: config.PlatformConfig,
                                                      outputs: dict[str, Any],
                                                      ca_file: Path) -> None:
    with connect(stats_dsn(outputs), ca_file) as conn:
        senders = conn.execute("SELECT application_name, state, sync_state "
                               "FROM pg_stat_replication ORDER BY 1").fetchall()
        slots = conn.execute("SELECT slot_name, slot_type, active FROM pg_replication_slots "
                             "ORDER BY 1").fetchall()
    assert len(outputs["replica_dsns"]) == cfg.replicas
    assert [s[1] for s in senders] == ["streaming"] * cfg.replicas, senders
    physical = [s for s in slots if s[1] == "physical"]
    assert len(physical) == cfg.replicas and all(s[2] for s in physical), slots
    for dsn in outputs["replica_dsns"]:
        # pg_stat_wal_receiver shows its fields to privileged roles only.
        with connect(as_monitor(dsn, outputs), ca_file) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            status = conn.execute("SELECT status, slot_name FROM pg_stat_wal_receiver"
                                  ).fetchone()
        assert status is not None and status[0] == "streaming"
        assert status[1] in {s[0] for s in physical}


def test_lag_is_within_the_bound(cfg: config.PlatformConfig, outputs: dict[str, Any],
                                 ca_file: Path, pytestconfig: pytest.Config) -> None:
    """A fresh write's LSN is replayed on every replica within --max-lag-seconds."""
    if cfg.replicas == 0:
        assert outputs["replica_dsns"] == []
        return
    bound = float(pytestconfig.getoption("max_lag_seconds"))
    with connect(outputs["primary_dsn"], ca_file) as conn:
        conn.execute("SELECT txid_current()")  # a commit record: new WAL to replay
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        lsn = row[0]
    written = time.monotonic()
    for dsn in outputs["replica_dsns"]:
        with connect(dsn, ca_file) as conn:
            while True:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                    (lsn,)).fetchone()
                if done and done[0]:
                    break
                assert time.monotonic() - written < bound, \
                    f"a replica had not replayed {lsn} after {bound}s"
                time.sleep(0.02)
