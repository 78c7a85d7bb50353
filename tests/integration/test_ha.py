"""High availability against real processes: etcd (3 members), Patroni on 3 nodes,
HAProxy and PgBouncer, with `ha.synchronous: on`.

Each test tries to break the cluster the way an operator or a crash would, and
checks what clients see through the unchanged pooler DSN. The tests share one
cluster and leave it healthy (every node running and streaming) for the next.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest

from infra import hostctl
from infra.hostctl.foreground import wait_for
from infra.hostctl.patroni import restart_pending
from infra.ops import cluster as oc
from tests import ha_support
from tests.ha_load import WriteLoad

pytestmark = pytest.mark.ha


@pytest.fixture(scope="module")
def ha() -> Iterator[ha_support.HaStack]:
    with ha_support.ledger_stack() as stack:
        yield stack


def _healthy(ha: ha_support.HaStack) -> None:
    for p in ha.procs.values():
        p.start()
    for p in ha.procs.values():
        p.wait_running(timeout=120)
    ha.wait_replicating(timeout=90)


def _rows(ha: ha_support.HaStack) -> set[tuple[int, int]]:
    lead = ha.leader()
    assert lead is not None
    with psycopg.connect(ha.node_dsn(lead)) as conn:
        return {(int(c), int(s)) for c, s in conn.execute("SELECT client, seq FROM ha_ledger")}


def _fresh_ledger(ha: ha_support.HaStack) -> None:
    lead = ha.leader()
    assert lead is not None
    with psycopg.connect(ha.node_dsn(lead)) as conn:
        conn.execute("TRUNCATE ha_ledger")


def test_etcd_is_three_members_and_keeps_quorum_with_one_down(ha: ha_support.HaStack) -> None:
    assert ha.etcd.healthy_count() == 3
    victim = ha.etcd.members[0]
    victim.daemon.signal(signal.SIGKILL)
    try:
        wait_for(lambda: ha.etcd.healthy_count() == 2, timeout=10, what="one member down")
        with psycopg.connect(ha.pooler_dsn(), prepare_threshold=None, autocommit=True) as c:
            c.execute("INSERT INTO ha_ledger VALUES (-1, 1)")
        assert ha.leader() is not None
    finally:
        wait_for(lambda: not victim.daemon.is_running(), timeout=10, what="etcd exits")
        ha.etcd.start()
        _fresh_ledger(ha)


def test_switchover_under_load_fails_no_client_transaction(ha: ha_support.HaStack) -> None:
    _fresh_ledger(ha)
    before, result, load = ha.switchover_under_load()
    assert result.old_leader == before and result.new_leader != before
    assert ha.leader() == result.new_leader
    assert load.failures == [], load.failures[:5]
    # Every acknowledged commit is on the new leader.
    missing = {(c, s) for c, seqs in load.acked.items() for s in seqs} - _rows(ha)
    assert not missing
    print(f"switchover paused writes {result.paused_seconds:.2f}s")
    _healthy(ha)


def test_killed_leader_fails_over_and_rejoins_with_pg_rewind(ha: ha_support.HaStack) -> None:
    _fresh_ledger(ha)
    load = WriteLoad(ha.pooler_dsn(), clients=4).start()
    ha.wait_replicating()
    old = ha.leader()
    assert old is not None
    proc = ha.procs[old]
    try:
        load.wait_for_acks(300)
        postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
        assert postmaster and patroni
        killed = time.monotonic()
        os.kill(patroni, signal.SIGKILL)   # the whole node: its manager and its server
        os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: load.recovered_at(killed) is not None, timeout=90,
                   what="a write through the same pooler DSN after the kill")
        recovered = load.recovered_at(killed)
        load.wait_for_acks(100)
    finally:
        load.stop()
    new = ha.leader()
    assert new is not None and new != old
    # synchronous on: every commit a client saw acknowledged survived the failover.
    missing = {(c, s) for c, seqs in load.acked.items() for s in seqs} - _rows(ha)
    assert not missing, f"{len(missing)} acknowledged commits lost"
    assert recovered is not None
    print(f"kill to first write {recovered - killed:.1f}s")
    # The old leader, restarted, rewinds onto the new timeline and follows.
    log_size = proc.daemon.log_file.stat().st_size
    wait_for(lambda: proc.postmaster_pid() is None or not _pid_alive(proc.postmaster_pid()),
               timeout=15, what="the killed postmaster is gone")
    proc.start()
    proc.wait_running(timeout=120)
    ha.wait_replicating(timeout=90)
    with proc.daemon.log_file.open(errors="replace") as fh:
        fh.seek(log_size)
        assert "pg_rewind" in fh.read()
    ms = {m.name: m for m in oc.cluster_members(ha.any_config)}
    assert ms[old].role in ("Replica", "Sync Standby")
    assert ms[old].timeline == ms[new].timeline


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _replica(ha: ha_support.HaStack) -> str:
    lead = ha.leader()
    return next(n for n in ha.procs if n != lead)


def _streams(ha: ha_support.HaStack, member: str) -> bool:
    lead = ha.leader()
    if lead is None:
        return False
    try:
        with psycopg.connect(ha.node_dsn(lead, "postgres"), connect_timeout=3) as conn:
            return conn.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = %s "
                                "AND state = 'streaming'", (member,)).fetchone() is not None
    except psycopg.Error:
        return False


def test_replica_restarted_by_hand_streams_again(ha: ha_support.HaStack) -> None:
    name = _replica(ha)
    data = ha.procs[name].data_dir

    # By hand, the way an operator would: pg_ctl restart, outside Patroni.
    log = ha.base / f"run-{name}" / "by-hand.log"  # a folder the service user owns
    hostctl.run([str(hostctl.bin_dir() / "pg_ctl"), "restart", "-w", "-m", "fast", "-D", str(data),
               "-l", str(log)], what="pg_ctl restart of a replica")
    wait_for(lambda: _streams(ha, name), timeout=60, what=f"{name} streams again")


def test_deleted_slot_is_recreated(ha: ha_support.HaStack) -> None:
    name = _replica(ha)
    slot = name.replace("-", "_")
    lead = ha.leader()
    assert lead is not None
    with psycopg.connect(ha.node_dsn(lead, "postgres"), autocommit=True) as conn:
        def drop() -> bool:
            conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            except psycopg.errors.ObjectInUse:
                return False
            return True

        wait_for(drop, timeout=10, what=f"slot {slot} dropped")
        assert conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            (slot,)).fetchone() is None
    made = oc.ensure_member_slots(ha.node_dsn(lead, "postgres"), list(ha.procs), lead)
    assert made == [slot]
    assert oc.ensure_member_slots(ha.node_dsn(lead, "postgres"), list(ha.procs), lead) == []
    wait_for(lambda: _streams(ha, name), timeout=60, what=f"{name} streams through its slot")


def test_killed_primary_server_is_restarted_without_refresh(ha: ha_support.HaStack) -> None:
    lead = ha.leader()
    assert lead is not None
    proc = ha.procs[lead]
    pid = proc.postmaster_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)  # the server only; Patroni itself lives on
    wait_for(lambda: ha.leader() is not None and (ha.procs[ha.leader() or ""]
                                                    .postmaster_pid() not in (None, pid)),
               timeout=60, what="a running leader again")
    with psycopg.connect(ha.pooler_dsn(), prepare_threshold=None, autocommit=True) as conn:
        wait_for(lambda: _insert_ok(conn), timeout=30, what="writes through the pooler")
    _healthy(ha)


def _insert_ok(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("INSERT INTO ha_ledger VALUES (-2, (random() * 1e9)::int)")
    except psycopg.Error:
        return False
    return True


def test_max_connections_increase_restarts_replicas_before_leader(
        ha: ha_support.HaStack) -> None:
    _healthy(ha)
    scope = f"pg-platform-{ha.cfg.stack}"
    old = ha.cfg.postgres.max_connections
    starts_before = {n: _start_time(ha, n) for n in ha.procs}
    oc.set_parameters(ha.any_config, {"max_connections": str(old + 10)})
    wait_for(lambda: all(_pending(ha, n) for n in ha.procs), timeout=30,
               what="every node reports pending_restart")
    order = restart_pending(ha.any_config, scope,
                               lambda n: ha.procs[n].wait_running(timeout=120))
    assert order[-1] == ha.leader()
    starts = {n: _start_time(ha, n) for n in ha.procs}
    assert all(starts[n] > starts_before[n] for n in ha.procs)
    assert max(starts[n] for n in order[:-1]) < starts[order[-1]]
    for n in ha.procs:
        with psycopg.connect(ha.node_dsn(n, "postgres")) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == (str(old + 10),)
    ha.wait_replicating(timeout=60)
    for p in ha.procs.values():
        assert "insufficient parameter settings" not in p.daemon.log_file.read_text(
            errors="replace")


def _start_time(ha: ha_support.HaStack, name: str) -> str:
    status = ha.procs[name].status() or {}
    return str(status.get("postmaster_start_time", ""))


def _pending(ha: ha_support.HaStack, name: str) -> bool:
    return bool((ha.procs[name].status() or {}).get("pending_restart"))
