"""The health verdict: which findings make a stack degraded or unhealthy, and why."""

from __future__ import annotations

from infra.config import MonitoringSettings
from infra.health.model import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Backups,
    Node,
    Pool,
    Pooler,
    Report,
    Schema,
)
from infra.health.probes import backup_ages
from infra.health.verdict import evaluate

MON = MonitoringSettings()
DAY = 86400


def node(name: str = "primary", role: str = "primary", **kw: object) -> Node:
    base: dict[str, object] = dict(up=True, role=role, version="15", connections=5,
                                   max_connections=100, reserved_connections=3)
    if role == "replica":
        base.update(replication_state="streaming", lag_bytes=0, lag_seconds=0.0)
    base.update(kw)
    return Node(name=name, expected_role=role, **base)  # type: ignore[arg-type]


def healthy() -> Report:
    return Report(
        stack="t",
        nodes=[node(), node("replica-1", "replica")],
        pooler=Pooler(up=True, pools=[Pool("platform", "app", 1, 0, 1, 2, 0.0)]),
        backups=Backups(available=True, age_seconds={"full": 3600.0, "diff": None,
                                                     "incr": None},
                        count={"full": 1}, archive_failed_count=0),
        schema=Schema(available=True, tenants=3))


def judge(r: Report) -> Report:
    return evaluate(r, MON, 7 * DAY)


def test_all_good_is_healthy() -> None:
    r = judge(healthy())
    assert (r.status, r.reasons, r.exit_code) == (HEALTHY, [], 0)


def test_stopped_replica_is_degraded_and_named() -> None:
    r = healthy()
    r.nodes[1] = Node("replica-1", "replica", error="connection refused")
    r = judge(r)
    assert r.status == DEGRADED and r.exit_code == 1
    assert [x.component for x in r.reasons] == ["replica-1"]
    assert "replica is down" in r.reasons[0].message


def test_primary_down_is_unhealthy() -> None:
    r = healthy()
    r.nodes[0] = Node("primary", "primary", error="timeout")
    assert judge(r).status == UNHEALTHY and judge(r).exit_code == 2


def test_lag_over_threshold() -> None:
    r = healthy()
    r.nodes[1].lag_seconds = MON.replication_lag_seconds + 1
    r.nodes[1].lag_bytes = MON.replication_lag_bytes + 1
    r = judge(r)
    assert r.status == DEGRADED
    assert len(r.reasons) == 2 and all(x.component == "replica-1" for x in r.reasons)


def test_lag_at_threshold_is_fine() -> None:
    r = healthy()
    r.nodes[1].lag_seconds = float(MON.replication_lag_seconds)
    assert judge(r).status == HEALTHY


def test_replica_not_streaming() -> None:
    r = healthy()
    r.nodes[1].replication_state = "not connected to the primary"
    assert "not streaming" in judge(r).reasons[0].message


def test_connections_warn_and_critical() -> None:
    r = healthy()
    r.nodes[0].connections = 80  # 80 of 97 usable: 82%
    assert judge(r).status == DEGRADED
    r.nodes[0].connections = 95
    assert judge(r).status == UNHEALTHY


def test_pool_waiting_and_maxwait() -> None:
    r = healthy()
    assert r.pooler is not None
    r.pooler.pools[0].cl_waiting = 3
    r.pooler.pools[0].maxwait_seconds = 9.0
    msgs = [x.message for x in judge(r).reasons]
    assert any("3 client(s) waiting" in m for m in msgs)
    assert any("waited 9.0s" in m for m in msgs)


def test_pooler_down_is_unhealthy() -> None:
    r = healthy()
    r.pooler = Pooler(up=False, error="connection refused")
    assert judge(r).status == UNHEALTHY


def test_backups_missing_old_and_archiving() -> None:
    r = healthy()
    r.backups.age_seconds["full"] = None
    assert "no full backup" in judge(r).reasons[0].message
    r.backups.age_seconds["full"] = 8.0 * DAY
    assert "old" in judge(r).reasons[0].message
    r.backups.age_seconds["full"] = 3600.0
    r.backups.archive_failing = True
    assert "archiving is failing" in judge(r).reasons[0].message


def test_pending_migrations_degrade() -> None:
    r = healthy()
    r.schema.pending = ["schema 0005 new (pending)"]
    r = judge(r)
    assert r.status == DEGRADED and "1 migration(s) pending" in r.reasons[0].message


def test_backup_ages_pick_newest_per_type() -> None:
    info = {"backup": [
        {"type": "full", "timestamp": {"start": 0, "stop": 1000}},
        {"type": "full", "timestamp": {"start": 0, "stop": 5000}},
        {"type": "incr", "timestamp": {"start": 0, "stop": 5500}},
    ]}
    ages, counts = backup_ages(info, now=6000)
    assert ages == {"full": 1000.0, "diff": None, "incr": 500.0}
    assert counts == {"full": 2, "diff": 0, "incr": 1}
