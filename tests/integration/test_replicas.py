"""Streaming replicas made by the local backend's provider, against real servers."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from infra import hostctl
from infra.backends import local
from infra.backends.local_layout import replicas
from infra.backends.local_replica import ReplicaProvider
from tests.integration.conftest import Cluster


def slots(cluster: Cluster) -> dict[str, bool]:
    with psycopg.connect(cluster.monitor_dsn(), autocommit=True) as conn:
        return dict(conn.execute("SELECT slot_name, active FROM pg_replication_slots"
                                 ).fetchall())


def test_two_replicas_stream_through_their_own_active_slots(cluster: Cluster) -> None:
    with psycopg.connect(cluster.monitor_dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT application_name, state FROM pg_stat_replication "
                            "ORDER BY 1").fetchall()
    assert rows == [("replica_1", "streaming"), ("replica_2", "streaming")]
    assert slots(cluster) == {"replica_1": True, "replica_2": True}
    for i in (1, 2):
        with psycopg.connect(cluster.replica_dsn(i, monitor=True), autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            row = conn.execute("SELECT status, slot_name FROM pg_stat_wal_receiver").fetchone()
            assert row == ("streaming", f"replica_{i}")


def test_a_row_written_on_the_primary_is_replayed_on_both_replicas(cluster: Cluster) -> None:
    """Each replica replays past the commit's LSN and then serves the row.

    How fast that happens is bench P5's figure (replay lag), not an assertion here.
    """
    with psycopg.connect(cluster.owner_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.repl_probe (v text)")
        token = f"probe-{time.monotonic_ns()}"
        conn.execute("INSERT INTO public.repl_probe VALUES (%s)", (token,))
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        lsn = row[0]
    for i in (1, 2):
        with psycopg.connect(cluster.replica_dsn(i), autocommit=True) as conn:
            def replayed(conn: psycopg.Connection[tuple[bool]] = conn) -> bool:
                got = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                   (lsn,)).fetchone()
                return bool(got and got[0])
            assert hostctl.wait_until(replayed, timeout=60), f"replica {i} never replayed {lsn}"
            assert conn.execute("SELECT 1 FROM public.repl_probe WHERE v = %s",
                                (token,)).fetchone() == (1,)


def test_replicas_refuse_writes(cluster: Cluster) -> None:
    with psycopg.connect(cluster.replica_dsn(1), autocommit=True) as conn:
        try:
            conn.execute("CREATE TABLE public.nope (i int)")
        except psycopg.errors.ReadOnlySqlTransaction:
            return
    raise AssertionError("a replica accepted a write")


def test_removing_a_replica_stops_it_removes_its_data_and_drops_its_slot(
        cluster: Cluster) -> None:
    cfg3 = cluster.with_settings(replicas=3)
    rep = replicas(cfg3)[2]
    props = local.replica_props(cfg3, rep, cluster.passwords["superuser"],
                                cluster.passwords["replication"], cluster.tls,
                                timescaledb=cluster.timescaledb)
    provider = ReplicaProvider()
    outs = dict(provider.create(props).outs or {})
    try:
        assert slots(cluster).get("replica_3") is True
        assert Path(rep.paths.data_dir, "standby.signal").exists()
    finally:
        provider.delete("", outs)
    assert "replica_3" not in slots(cluster)
    assert not Path(rep.paths.data_dir).exists()
    assert set(slots(cluster)) == {"replica_1", "replica_2"}
