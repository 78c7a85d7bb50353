"""The dead-leader fence (infra/hostctl/fence.py) on a real 3-node Patroni cluster with
`ha.synchronous: on` and ttl 20, the daemon the local backend runs (tests/ha_support.py).

It must replace a leader node that is provably gone without waiting for the leader
key's lease, and must never act on a leader that still exists in any form: Patroni
killed alone (its PostgreSQL lives), or both stopped with SIGSTOP. Its compare-and-
delete must refuse a key that changed after it was read.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from infra.backends import local_fence
from infra.hostctl.etcd_kv import EtcdKV
from infra.hostctl.fence import Spec, decide
from infra.hostctl.fence_evidence import Evidence
from infra.hostctl.foreground import wait_for
from tests import ha_support, ports
from tests.ha_load import WriteLoad

pytestmark = pytest.mark.ha


@pytest.fixture(scope="module")
def ha() -> Iterator[ha_support.HaStack]:
    with ha_support.ledger_stack() as stack:
        yield stack


def _kv(ha: ha_support.HaStack) -> EtcdKV:
    return EtcdKV([m.member.client_url for m in ha.etcd.members], ha.files)


def _prefix(ha: ha_support.HaStack) -> str:
    return str(ha.fence_props["prefix"])


def _leader_key(ha: ha_support.HaStack) -> tuple[str, int, int] | None:
    """(member named, mod_revision, lease) of the leader key, None when absent."""
    kv = _kv(ha).get(f"{_prefix(ha)}/leader")
    return None if kv is None else (kv.value.decode(), kv.mod_revision, kv.lease)


def _healthy(ha: ha_support.HaStack) -> None:
    for p in ha.procs.values():
        p.start()
    for p in ha.procs.values():
        p.wait_running(timeout=120)
    ha.wait_replicating(timeout=120)
    assert ha.fence.running_pid() is not None, ha.fence.tail()


def _rows(ha: ha_support.HaStack) -> set[tuple[int, int]]:
    lead = ha.leader()
    assert lead is not None
    with psycopg.connect(ha.node_dsn(lead)) as conn:
        return {(int(c), int(s)) for c, s in conn.execute("SELECT client, seq FROM ha_ledger")}


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _polls(ha: ha_support.HaStack) -> int:
    return int(ha.fence_status()["polls"])


def test_whole_node_kill_is_fenced_and_a_replica_promoted_at_once(
        ha: ha_support.HaStack) -> None:
    with psycopg.connect(ha.node_dsn("pg-1")) as conn:
        conn.execute("TRUNCATE ha_ledger")
    before = len(ha.fence_records())
    load = WriteLoad(ha.pooler_dsn(), clients=4).start()
    try:
        ha.wait_replicating()
        old = ha.leader()
        assert old is not None
        key = _leader_key(ha)
        assert key is not None and key[0] == old
        proc = ha.procs[old]
        load.wait_for_acks(300)
        postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
        assert postmaster and patroni
        killed = time.monotonic()
        os.kill(patroni, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: load.recovered_at(killed) is not None, timeout=90,
                 what="a write through the pooler DSN after the kill")
        recovered = load.recovered_at(killed)
        load.wait_for_acks(100)
    finally:
        load.stop()
    new = ha.leader()
    assert new is not None and new != old
    records = ha.fence_records()[before:]
    assert [r["leader"] for r in records] == [old], records
    assert "deleted the leader key" in records[0]["decision"]
    assert records[0]["mod_revision"] == key[1]
    assert "deleted the leader key" in ha.fence.tail()
    # The new leader took a fresh key of its own, not the old one's lease.
    now = _leader_key(ha)
    assert now is not None and now[0] == new and now[1] > key[1] and now[2] != key[2]
    missing = {(c, s) for c, seqs in load.acked.items() for s in seqs} - _rows(ha)
    assert not missing, f"{len(missing)} acknowledged commits lost"
    assert recovered is not None
    print(f"kill to first write {recovered - killed:.1f}s (fenced)")
    wait_for(lambda: not _exists(postmaster), timeout=15,
             what="the killed postmaster is gone")
    _healthy(ha)


def _key_stays(ha: ha_support.HaStack, key: tuple[str, int, int], polls: int,
               seconds: float = 6.0) -> dict[str, Any]:
    """The leader key is unchanged for `seconds`, over at least six of the fence's polls;
    the fence's status then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert _leader_key(ha) == key
        time.sleep(0.25)
    assert _polls(ha) >= polls + 6, ha.fence_status()
    return ha.fence_status()


def test_patroni_killed_alone_is_never_fenced(ha: ha_support.HaStack) -> None:
    """Its PostgreSQL still runs (and could still take writes): the key must stay until
    its lease runs out, over many of the fence's polls."""
    ha.wait_replicating()
    old = ha.leader()
    assert old is not None
    proc = ha.procs[old]
    key = _leader_key(ha)
    assert key is not None and key[0] == old
    before, polls = len(ha.fence_records()), _polls(ha)
    postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
    assert postmaster and patroni
    os.kill(patroni, signal.SIGKILL)
    try:
        # ttl 20, loop_wait 5: the lease lives at least 15 s after the kill; look for 6.
        status = _key_stays(ha, key, polls)
        assert status["leader"] == old and "PostgreSQL pid" in status["decision"]
        assert "not acting" in status["decision"]
        assert len(ha.fence_records()) == before
    finally:
        # Now the whole node: the fence may act, and a replica takes over (as in the
        # first test); the old node then rejoins through pg_rewind.
        os.kill(postmaster, signal.SIGKILL)
    wait_for(lambda: ha.leader() not in (None, old), timeout=60, what="a new leader")
    wait_for(lambda: not _exists(postmaster), timeout=15, what="the postmaster is gone")
    _healthy(ha)


def test_a_stopped_leader_is_never_fenced(ha: ha_support.HaStack) -> None:
    """SIGSTOP of Patroni and its postmaster: hung, not dead. The fence waits out the
    lease like Patroni does; it must not delete the key while the lease lives."""
    ha.wait_replicating()
    old = ha.leader()
    assert old is not None
    proc = ha.procs[old]
    key = _leader_key(ha)
    assert key is not None and key[0] == old
    before, polls = len(ha.fence_records()), _polls(ha)
    postmaster, patroni = proc.postmaster_pid(), proc.daemon.pid()
    assert postmaster and patroni
    os.kill(patroni, signal.SIGSTOP)
    os.kill(postmaster, signal.SIGSTOP)
    try:
        status = _key_stays(ha, key, polls)
        assert status["leader"] == old and "Patroni pid" in status["decision"], status
        assert len(ha.fence_records()) == before
    finally:
        os.kill(postmaster, signal.SIGCONT)
        os.kill(patroni, signal.SIGCONT)
    _healthy(ha)


def _spec(ha: ha_support.HaStack, prefix: str) -> Spec:
    spec = Spec.load(local_fence.spec_path(ha.fence_props))
    return Spec(prefix=prefix, endpoints=spec.endpoints, tls=spec.tls, members=spec.members,
                poll=spec.poll, confirm=0.01, run_dir=spec.run_dir)


def test_compare_and_delete_refuses_a_changed_key(ha: ha_support.HaStack) -> None:
    kv = _kv(ha)
    key = "/fence-test/cas/leader"
    kv.put(key, "pg-1")
    read = kv.get(key)
    assert read is not None
    kv.put(key, "pg-1")  # same value, taken again: a new mod_revision
    assert not kv.delete_if_unchanged(key, read.value, read.mod_revision)
    kv.put(key, "pg-2")
    fresh = kv.get(key)
    assert fresh is not None
    assert not kv.delete_if_unchanged(key, read.value, fresh.mod_revision)  # other value
    # A member key written since (a Patroni that came back) refuses it too.
    kv.put("/fence-test/cas/members/pg-2", "{}")
    assert not kv.delete_if_unchanged(key, fresh.value, fresh.mod_revision,
                                      [("/fence-test/cas/members/pg-2", 0)])
    assert kv.get(key) == fresh
    assert kv.delete_if_unchanged(key, fresh.value, fresh.mod_revision)
    assert kv.get(key) is None


def test_decide_refuses_when_the_key_changes_while_it_confirms(
        ha: ha_support.HaStack) -> None:
    """The whole decision with a member 'proven dead': a new leader taking the key
    between the two looks (here, during the confirm sleep) stops it."""
    kv = _kv(ha)
    prefix = "/fence-test/decide"
    kv.put(f"{prefix}/config", '{"ttl": 20}')
    kv.put(f"{prefix}/leader", "pg-1")
    spec = _spec(ha, prefix)
    dead = lambda _m: Evidence()  # noqa: E731

    def new_leader_meanwhile(_s: float) -> None:
        kv.put(f"{prefix}/leader", "pg-2")

    d = decide(spec, kv, dead, new_leader_meanwhile)
    assert not d.acted and "changed while confirming" in d.text
    assert kv.get(f"{prefix}/leader") is not None
    kv.put(f"{prefix}/config", '{"ttl": 20, "pause": true}')
    d = decide(spec, kv, dead, lambda _s: None)
    assert not d.acted and "paused" in d.text
    kv.put(f"{prefix}/config", '{"ttl": 20}')
    d = decide(spec, kv, dead, lambda _s: None)
    assert d.acted, d.text
    assert kv.get(f"{prefix}/leader") is None
    # etcd unreachable: nothing is known, nothing is done.
    nowhere = EtcdKV([f"https://127.0.0.1:{ports.free_port()}"], ha.files)  # nothing there
    d = decide(spec, nowhere, dead, lambda _s: None)
    assert not d.acted and "etcd did not answer" in d.text
