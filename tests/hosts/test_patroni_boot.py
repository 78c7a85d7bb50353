"""`make test-hosts`: prod with `ha.manager: patroni` on three hosts, and the day one dies.

Its own platform (tests/hosts/tier.py with `replicas: 2`, `ha.manager: patroni`,
`ha.synchronous: on`): three hosts booted at once from the prod program's real
user-data and bundles, as EC2 would launch them. The steps run in file order,
each on what the previous ones left, and each logs one `host-tier patroni step
N/6` line:

1. etcd's quorum of three forms, Patroni elects a leader (the first host, which
   bootstraps), and makes both replicas, which stream, one of them synchronous;
2. writes through the pooler (PgBouncer on the first host, dialling HAProxy);
3. the leader host dies under a small write load (its link goes dark, then every
   process of its namespace is SIGKILLed: Patroni, PostgreSQL, its etcd member,
   PgBouncer, HAProxy): a replica is promoted, writes succeed through every
   surviving path, and no acknowledged commit is lost;
4. the dead host's services start again (its next boot, same volume): it rejoins
   as a replica of the new leader, rewound if its history diverged;
5. a second bundle raising `max_connections` (a restart parameter), applied in
   place, restarts the replicas before the leader (issue #15);
6. the first host's pooler: still the one PgBouncer on main, it reaches the new
   leader through HAProxy once its host is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from tests.hosts import patroni_steps as ps
from tests.hosts import steps
from tests.hosts.tier import Tier, sweep_stale

logger = logging.getLogger("host-tier")
STEPS = 6
MAX_CONNECTIONS = 60   # what program.settings gives the tier; step 5 raises it
FAILOVER_TIMEOUT = 180.0


def _log(n: int, name: str, started: float, detail: str) -> None:
    logger.info("host-tier patroni step %d/%d %s: ok in %.1fs: %s", n, STEPS, name,
                time.monotonic() - started, detail)


@pytest.fixture(scope="module")
def tier() -> Iterator[Tier]:
    sweep_stale()
    t = Tier(replicas=2, changes={"ha": {"manager": "patroni", "synchronous": "on"}})
    started = time.monotonic()
    try:
        t.up()
        logger.info("host-tier patroni up in %.0fs (rootfs %s %.0fs; boots %s)",
                    time.monotonic() - started,
                    "built" if t.timings.rootfs_built else "cached", t.timings.rootfs,
                    ", ".join(f"{k} {v:.0f}s" for k, v in t.timings.boot.items()))
        yield t
    finally:
        left = t.down()
        logger.info("host-tier patroni down: %s", left if left else "clean")
        assert not left, left


# What step 3 leaves for the later steps.
STATE: dict[str, str] = {}


def test_1_quorum_leader_and_streaming_replicas(tier: Tier) -> None:
    started = time.monotonic()
    quorum = ps.etcd_quorum(tier, tier.hosts)
    lead = ps.leader(tier, tier.hosts)
    assert lead.name == "primary", f"the first host bootstraps and leads, not {lead.name}"
    replicas = steps.wait_until(
        "both replicas running on the leader's timeline",
        lambda: (r := ps.healthy_replicas(tier, tier.hosts, lead)) == ["replica-1",
                                                                         "replica-2"] and r,
        120)
    sent = steps.wait_until("two streaming senders on the leader, one synchronous",
                            lambda: ps.sync_senders(lead), 60)
    ps.make_table(tier, lead)
    ps.write_once(ps.owner_on(tier, lead), 0, "step 1")
    for h in tier.hosts[1:]:
        steps.wait_until(f"row 0 replayed on {h.name}",
                         lambda h=h: 0 in ps.rows(ps.owner_on(tier, h)), 30)
    made = {h.name: [ln.strip() for ln in ps.patroni_log(h).splitlines()
                     if "replica has been created" in ln][-1:] for h in tier.hosts[1:]}
    assert all(made.values()), f"Patroni's log does not say it made each replica: {made}"
    _log(1, "quorum, leader and streaming replicas", started,
         f"{quorum}; leader {lead.name}; replicas {replicas}; senders {sent}; "
         f"made by Patroni: {made}")


def test_2_writes_through_the_pooler(tier: Tier) -> None:
    started = time.monotonic()
    login = steps.pooled_read_write_login(tier)
    ps.write_once(tier.outputs["pooler_dsn"], 1, "pooler, step 2")
    assert 1 in ps.rows(ps.owner_on(tier, tier.host("primary")))
    _log(2, "writes through the pooler", started,
         f"{login}; a row inserted as the app role; PgBouncer runs on {ps.pooler_hosts(tier)}")


def test_3_leader_host_dies_under_load(tier: Tier) -> None:
    started = time.monotonic()
    old = ps.leader(tier, tier.hosts)
    survivors = [h for h in tier.hosts if h is not old]
    timeline = int(ps.members(tier, tier.hosts)[old.name]["timeline"])
    alive = list(tier.hosts)    # whom the writer asks who leads: the hosts still up
    writer = ps.Writer(target=lambda: ps.owner_on(tier, ps.leader(tier, alive)))
    writer.start()
    steps.wait_until("the writer's first acknowledged rows", lambda: len(writer.acked) >= 20, 60)
    before = len(writer.acked)
    crashed = time.monotonic()
    old.crash()
    alive.remove(old)
    new = steps.wait_until("a surviving replica promoted and running",
                           lambda: ps.leader(tier, survivors), FAILOVER_TIMEOUT)
    promoted = time.monotonic() - crashed
    steps.wait_until("writes acknowledged by the new leader",
                     lambda: writer.acked_since(before) >= 20, FAILOVER_TIMEOUT)
    writer.stop()
    paths = ps.surviving_write_paths(tier, survivors)
    for i, (what, dsn) in enumerate(paths.items()):
        ps.write_once(dsn, 1_000_000 + i, what)
    found = ps.rows(ps.owner_on(tier, new))
    lost = sorted(set(writer.acked) - found)
    assert not lost, f"acknowledged commits missing on {new.name}: {lost[:20]} ({len(lost)})"
    assert {1_000_000 + i for i in range(len(paths))} <= found
    new_timeline = int(ps.members(tier, survivors)[new.name]["timeline"])
    assert new_timeline > timeline, (timeline, new_timeline)
    other = [h.name for h in survivors if h is not new]
    steps.wait_until(f"{other} streaming from {new.name}",
                     lambda: ps.healthy_replicas(tier, survivors, new) == other, 120)
    quorum = ps.etcd(tier, survivors[0], "/health").get("health")
    assert quorum == "true", f"etcd after losing one member of three: {quorum}"
    skipped = [h.name for h in survivors if f"PgBouncer on {h.name}" not in paths]
    if skipped:
        logger.info("host-tier patroni step 3/%d: no PgBouncer on %s (main: the first host "
                    "only); the pooler-on-a-surviving-host check switches on when their "
                    "bundles enable %s", STEPS, skipped, ps.POOLER_UNIT)
    STATE.update(old=old.name, new=new.name)
    _log(3, "leader host dies under load", started,
         f"{old.name} crashed; {new.name} led after {promoted:.0f}s (timeline {timeline}->"
         f"{new_timeline}); writer: {len(writer.acked)} acknowledged, {writer.failures} "
         f"failed attempts, longest gap {writer.longest_gap:.1f}s, none lost; writes "
         f"through {list(paths)}; {other} stream from {new.name}; etcd healthy on 2 of 3")


def test_4_dead_host_rejoins_as_a_replica(tier: Tier) -> None:
    started = time.monotonic()
    if not STATE:
        pytest.fail("step 3 did not run or failed: nothing crashed")
    old, new = tier.host(STATE["old"]), tier.host(STATE["new"])
    old.revive()
    units = ps.restart_services(tier, old)
    expected = sorted(h.name for h in tier.hosts if h is not new)
    steps.wait_until(f"{old.name} replicating from {new.name}",
                     lambda: ps.healthy_replicas(tier, tier.hosts, new) == expected, 300)
    assert ps.leader(tier, tier.hosts) is new, "the returning host took the lead back"
    ps.write_once(ps.owner_on(tier, new), 2_000_000, "after rejoin")
    steps.wait_until(f"the new row replayed on {old.name}",
                     lambda: 2_000_000 in ps.rows(ps.owner_on(tier, old)), 60)
    quorum = ps.etcd_quorum(tier, tier.hosts)
    rewind = ps.rewind_outcome(ps.patroni_log(old))
    assert rewind in ("not needed", "pg_rewind exit code=0"), rewind
    # The self-check over the replication protocol that verify-full refused at
    # `localhost` before patroni.yml sent it over the socket (infra/render/patroni.py).
    refused = {h.name: n for h in tier.hosts
               if (n := ps.patroni_log(h).count(ps.SELF_CHECK_FAILED))}
    assert not refused, f"Patroni's self-check refused ({ps.SELF_CHECK_FAILED}): {refused}"
    _log(4, "dead host rejoins as a replica", started,
         f"{old.name}: started {units}; replica of {new.name}, replays new rows; "
         f"rewind: {rewind}; no failed self-check on any node; {quorum}")


def test_5_parameter_change_restarts_replicas_first(tier: Tier) -> None:
    started = time.monotonic()
    lead = ps.leader(tier, tier.hosts)
    before = ps.start_times(tier, tier.hosts)
    wanted = MAX_CONNECTIONS + 20
    new = tier.rerender({"postgres": {"max_connections": wanted}})
    steps.push_and_apply(tier, new)
    for h in tier.hosts:
        steps.wait_until(f"max_connections {wanted} on {h.name}", lambda h=h: steps.show(
            ps.owner_on(tier, h), "max_connections") == str(wanted), 120)
    after = ps.start_times(tier, tier.hosts)
    assert all(after[n] > before[n] for n in before), f"not every node restarted: {after}"
    replicas = [n for n in after if n != lead.name]
    assert all(after[n] < after[lead.name] for n in replicas), (
        f"the leader {lead.name} restarted before a replica: {after}")
    assert ps.leader(tier, tier.hosts) is lead
    order = sorted(after, key=lambda n: after[n])
    _log(5, "parameter change restarts replicas first", started,
         f"max_connections {MAX_CONNECTIONS}->{wanted} in place on every node; restart "
         f"order {order} (leader {lead.name} last)")


def test_6_pooler_follows_the_leader(tier: Tier) -> None:
    started = time.monotonic()
    lead = ps.leader(tier, tier.hosts)
    login = steps.wait_until("a read-write login through the pooler",
                             lambda: steps.pooled_read_write_login(tier), 60)
    ps.write_once(tier.outputs["pooler_dsn"], 3_000_000, "pooler, step 6")
    assert 3_000_000 in ps.rows(ps.owner_on(tier, lead))
    _log(6, "the pooler follows the leader", started,
         f"{login}; the row landed on the leader {lead.name}")
