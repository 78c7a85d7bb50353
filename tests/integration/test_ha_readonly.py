"""The read-only pool across a failover, against real processes (etcd x3, Patroni x3,
HAProxy, PgBouncer, `ha.synchronous: on`).

Issue #15: `pooler_dsn` *and the read-only pool* keep working when the leader dies.
The read-only pool is PgBouncer's `<database>_ro` entry, which dials HAProxy's
replicas port: HAProxy sends it to members whose Patroni answers 200 on `/replica`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from infra.hostctl.foreground import wait_for
from tests import ha_support

pytestmark = pytest.mark.ha


@pytest.fixture(scope="module")
def ha() -> Iterator[ha_support.HaStack]:
    stack = ha_support.ha_stack(3, synchronous="on")
    try:
        stack.wait_replicating()
        yield stack
    finally:
        stack.stop()


def _ro_dsn(ha: ha_support.HaStack) -> str:
    return ha.pooler_dsn(f"{ha.cfg.postgres.database}_ro")


def _replicas_up(ha: ha_support.HaStack) -> list[str]:
    """Replicas HAProxy routes read-only sessions to (not the leader's backup entries)."""
    return [s for s in ha.proxy.servers_up("replicas") if not s.endswith("-as-leader")]


def _read(dsn: str) -> tuple[bool, str]:
    """(in recovery, the server's address) of a fresh session through `dsn`."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())").fetchone()
    assert row is not None
    return bool(row[0]), str(row[1])


def _read_or_none(dsn: str) -> tuple[bool, str] | None:
    try:
        return _read(dsn)
    except psycopg.Error:
        return None


class ReadLoad:
    """One client reading through the read-only pool in a loop, counting what it saw."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.ok, self.failed, self.on_leader = dsn, 0, 0, 0
        self.last_ok = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                in_recovery, _ = _read(self.dsn)
                self.ok += 1
                # A member being promoted stays in the replicas' pool until HAProxy's
                # next two /replica checks fail: a read may land on it meanwhile.
                self.on_leader += not in_recovery
                self.last_ok = time.monotonic()
            except psycopg.Error:
                self.failed += 1
                time.sleep(0.1)

    def __enter__(self) -> ReadLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_the_read_only_pool_reads_from_replicas(ha: ha_support.HaStack) -> None:
    lead = ha.leader()
    assert lead is not None
    leader_host = next(n.host for n in ha.nodes if n.name == lead)
    seen = {_read(_ro_dsn(ha)) for _ in range(6)}
    assert all(in_recovery for in_recovery, _ in seen)
    assert leader_host not in {host for _, host in seen}


def test_the_read_only_pool_keeps_serving_after_the_leader_dies(
        ha: ha_support.HaStack) -> None:
    old = ha.leader()
    assert old is not None
    proc = ha.procs[old]
    with ReadLoad(_ro_dsn(ha)) as reads:
        wait_for(lambda: reads.ok >= 20, timeout=30, what="reads through the read-only pool")
        postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
        assert postmaster and patroni
        killed = time.monotonic()
        os.kill(patroni, signal.SIGKILL)   # the whole node
        os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: (ha.leader() or old) != old, timeout=90, what="a new leader")
        new = ha.leader()
        # The promoted member leaves the replicas' pool; reads go on from the one left.
        wait_for(lambda: reads.last_ok > killed and reads.ok > 0, timeout=30,
                 what="a read through the read-only pool after the failover")
        before = reads.ok
        wait_for(lambda: reads.ok >= before + 20, timeout=30,
                 what="reads keep flowing after the failover")
    print(f"read-only pool over the failover: {reads.ok} reads, {reads.failed} failed, "
          f"{reads.on_leader} served by the member being promoted")
    survivor = next(n.host for n in ha.nodes if n.name not in (old, new))
    # While the survivor re-points at the new leader its /replica may flap, and the pool
    # then falls back to the leader (by design); once it settles, reads land on it.
    wait_for(lambda: _read_or_none(_ro_dsn(ha)) == (True, survivor), timeout=60,
             what="a read through the read-only pool served by the surviving replica")
    # Writes go on through the read-write pool, and the survivor refuses them on _ro.
    with psycopg.connect(ha.pooler_dsn(), connect_timeout=5) as conn:
        assert conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)
    with psycopg.connect(_ro_dsn(ha), connect_timeout=5) as conn, \
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE ro_attempt (id int)")
    # Bring the old leader back for whoever uses the cluster next.
    proc.start()
    proc.wait_running(timeout=120)
    ha.wait_replicating(timeout=90)


def test_with_no_replica_left_the_read_only_pool_falls_back_to_the_leader(
        ha: ha_support.HaStack) -> None:
    lead = ha.leader()
    assert lead is not None
    replicas = [n for n in ha.procs if n != lead]
    for name in replicas:   # both replicas, whole nodes
        proc = ha.procs[name]
        postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
        assert postmaster and patroni
        os.kill(patroni, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
    try:
        wait_for(lambda: _replicas_up(ha) == [], timeout=30,
                 what="HAProxy marks both replicas down")
        leader_host = next(n.host for n in ha.nodes if n.name == lead)
        assert _read(_ro_dsn(ha)) == (False, leader_host)
    finally:
        for name in replicas:
            ha.procs[name].start()
        for name in replicas:
            ha.procs[name].wait_running(timeout=120)
        ha.wait_replicating(timeout=90)
    # Once a replica is back, new read-only sessions go to the replicas again.
    wait_for(lambda: len(_replicas_up(ha)) == 2, timeout=30,
             what="HAProxy routes to the replicas again")
    assert _read(_ro_dsn(ha))[0] is True
