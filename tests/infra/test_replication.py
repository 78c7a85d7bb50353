"""Streaming replication: each replica streams through its own active slot, and keeps up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from infra import config
from tests.infra.conftest import (
    as_monitor,
    connect,
    privileged_stats,
    stats_dsn,
    superuser_rows,
)
from tests.infra.inventory import Host


def senders_and_slots(cfg: config.PlatformConfig, primary: Host, outputs: dict[str, Any],
                      ca_file: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """pg_stat_replication's fields are shown to pg_monitor members only: through the
    monitor DSN where the stack has one, else as the superuser on the primary's host."""
    senders_sql = "SELECT application_name, state, sync_state FROM pg_stat_replication"
    with connect(stats_dsn(outputs), ca_file) as conn:
        slots = conn.execute("SELECT slot_name, slot_type, active FROM pg_replication_slots "
                             "ORDER BY 1").fetchall()
        if privileged_stats(outputs):
            return conn.execute(senders_sql + " ORDER BY 1").fetchall(), slots
    rows = superuser_rows(primary, cfg, outputs, ca_file, senders_sql)
    return sorted((r["application_name"], r["state"], r["sync_state"]) for r in rows), slots


def wal_receiver(cfg: config.PlatformConfig, replica: Host, dsn: str, outputs: dict[str, Any],
                 ca_file: Path) -> tuple[Any, ...] | None:
    sql = "SELECT status, slot_name FROM pg_stat_wal_receiver"
    if privileged_stats(outputs):
        with connect(as_monitor(dsn, outputs), ca_file) as conn:
            return conn.execute(sql).fetchone()
    rows = superuser_rows(replica, cfg, outputs, ca_file, sql)
    return (rows[0]["status"], rows[0]["slot_name"]) if rows else None


def test_every_replica_streams_through_an_active_slot(cfg: config.PlatformConfig,
                                                      primary: Host, replica_hosts: list[Host],
                                                      server_dsns: dict[str, str],
                                                      outputs: dict[str, Any],
                                                      ca_file: Path) -> None:
    """As many standbys stream as `replicas` configures, each through its own active slot;
    each replica's own server is in recovery, and so is whatever replica_dsns reach (one
    per replica, or with Patroni HAProxy's read-only port)."""
    senders, slots = senders_and_slots(cfg, primary, outputs, ca_file)
    assert [s[1] for s in senders] == ["streaming"] * cfg.replicas, senders
    physical = [s for s in slots if s[1] == "physical"]
    assert len(physical) == cfg.replicas and all(s[2] for s in physical), slots
    receiving = set()
    for host in replica_hosts:
        dsn = server_dsns[host.name]
        with connect(dsn, ca_file) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        status = wal_receiver(cfg, host, dsn, outputs, ca_file)
        assert status is not None and status[0] == "streaming", (host.name, status)
        assert status[1] in {s[0] for s in physical}, (host.name, status, slots)
        receiving.add(status[1])
    assert len(receiving) == cfg.replicas, "two replicas share a slot"
    assert bool(outputs["replica_dsns"]) == bool(cfg.replicas), "replica_dsns"
    for dsn in outputs["replica_dsns"]:
        with connect(dsn, ca_file) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_lag_is_within_the_bound(cfg: config.PlatformConfig, replica_hosts: list[Host],
                                 server_dsns: dict[str, str], outputs: dict[str, Any],
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
    for host in replica_hosts:   # each server itself, not a proxy's pick of one
        with connect(server_dsns[host.name], ca_file) as conn:
            while True:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                    (lsn,)).fetchone()
                if done and done[0]:
                    break
                assert time.monotonic() - written < bound, \
                    f"{host.name} had not replayed {lsn} after {bound}s"
                time.sleep(0.02)
