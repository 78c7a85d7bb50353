"""Cluster operations on a Patroni-managed stack: status, and a switchover clients
do not notice.

Behind `python -m infra cluster` (infra/ops/cluster_cli.py). A planned
switchover is: PgBouncer PAUSE (waits for running
transactions, then holds new ones), `patronictl switchover`, wait until HAProxy
routes to the new leader, RESUME. Clients see a wait of a few seconds, never an
error, as long as it stays below PgBouncer's query_wait_timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from infra.errors import ProcessError
from infra.hostctl.foreground import wait_for
from infra.hostctl.patroni import PatroniProcess, from_config, members, patronictl

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    role: str
    state: str
    timeline: int | None
    lag_mb: float | None

    @classmethod
    def from_patronictl(cls, row: dict[str, Any]) -> Member:
        lag = row.get("Lag in MB")
        return cls(name=str(row["Member"]), host=str(row.get("Host", "")),
                   role=str(row.get("Role", "")), state=str(row.get("State", "")),
                   timeline=int(row["TL"]) if row.get("TL") not in (None, "") else None,
                   lag_mb=float(lag) if isinstance(lag, (int, float)) else None)


def cluster_members(config_file: Path) -> list[Member]:
    return [Member.from_patronictl(r) for r in members(config_file)]


def leader_of(ms: list[Member]) -> Member | None:
    return next((m for m in ms if m.role == "Leader"), None)


def format_status(ms: list[Member]) -> str:
    """The table `make status` and `cluster status` print."""
    lead = leader_of(ms)
    lines = [f"leader: {lead.name if lead else 'NONE'}",
             f"{'member':<12} {'host':<22} {'role':<14} {'state':<12} {'TL':>4} {'lag MB':>8}"]
    for m in ms:
        lag = "" if m.lag_mb is None else f"{m.lag_mb:g}"
        tl = "" if m.timeline is None else str(m.timeline)
        lines.append(f"{m.name:<12} {m.host:<22} {m.role:<14} {m.state:<12} {tl:>4} {lag:>8}")
    return "\n".join(lines)


def console(admin_dsn: str, command: str) -> None:
    """One PgBouncer admin command (simple query protocol)."""
    with psycopg.connect(admin_dsn, autocommit=True, cursor_factory=psycopg.ClientCursor,
                         connect_timeout=10) as conn:
        conn.execute(command)


def pick_candidate(ms: list[Member]) -> Member:
    """The streaming replica with the least lag."""
    ok = [m for m in ms if m.role in ("Replica", "Sync Standby")
          and m.state in ("running", "streaming")]
    if not ok:
        raise ProcessError("switchover: no running replica to hand the leader role to; "
                           "members: " + ", ".join(f"{m.name}={m.role}/{m.state}" for m in ms))
    sync = [m for m in ok if m.role == "Sync Standby"]
    return min(sync or ok, key=lambda m: m.lag_mb or 0.0)


@dataclass(frozen=True)
class SwitchoverResult:
    old_leader: str
    new_leader: str
    paused_seconds: float


def switchover(config_file: Path, admin_dsn: str, database: str,
               routed_to: Callable[[str], bool], *, candidate: str | None = None,
               node_dsn: Callable[[Member], str] | None = None,
               timeout: float = 60.0) -> SwitchoverResult:
    """PAUSE, switch, wait for the proxy and the new leader, RESUME; RESUME also runs
    when a step fails.

    With `node_dsn` (a superuser DSN of one member) a CHECKPOINT runs on the leader
    before the pause, so the old leader's shutdown checkpoint, which the pause waits
    for, has little left to write; and RESUME waits until the candidate has left
    recovery. Patroni's /primary answers 200 as soon as it asked PostgreSQL to
    promote, so HAProxy may route to a node a few milliseconds before it accepts
    writes: clients resumed then would see "read-only transaction" errors.
    """
    ms = cluster_members(config_file)
    lead = leader_of(ms)
    if lead is None:
        raise ProcessError("switchover: the cluster has no leader; use `cluster failover`")
    cand = next((m for m in ms if m.name == candidate), None) if candidate else \
        pick_candidate(ms)
    if cand is None or cand.name == lead.name:
        raise ProcessError(f"switchover --candidate={candidate!r}: not a replica of this "
                           f"cluster; members: {', '.join(m.name for m in ms)}")
    if node_dsn is not None:
        with psycopg.connect(node_dsn(lead), autocommit=True, connect_timeout=10) as conn:
            conn.execute("CHECKPOINT")
    pool = ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    console(admin_dsn, f"PAUSE {database}")
    try:
        # Straight to the leader's REST API, in a thread. The leader's: a member wakes
        # only its own HA loop on a switchover request, and the leader would otherwise
        # act at its next loop (up to loop_wait later; measured 7 s with loop_wait 9).
        # In a thread: Patroni answers only after polling its store once a second.
        reply = pool.submit(leader_api(config_file, lead).post, "/switchover",
                            {"leader": lead.name, "candidate": cand.name}, timeout=timeout)

        def switched() -> bool:
            if reply.done():
                _check_reply(reply.result(), lead.name, cand.name)
            return routed_to(cand.name) and (node_dsn is None or writable(node_dsn(cand)))

        wait_for(switched, timeout=timeout, interval=0.05,
                 what=f"the proxy routes to the new leader {cand.name}")
    finally:
        console(admin_dsn, f"RESUME {database}")
        paused = time.monotonic() - started
        pool.shutdown(wait=True)
    _check_reply(reply.result(), lead.name, cand.name)
    logger.info("switchover %s -> %s; writes paused %.2fs", lead.name, cand.name, paused)
    return SwitchoverResult(lead.name, cand.name, paused)


def writable(dsn: str) -> bool:
    """The server behind `dsn` accepts writes (has left recovery)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] is False


def leader_api(config_file: Path, lead: Member) -> PatroniProcess:
    """The leader's REST API, with the credentials and CA of `config_file` (every member's
    patroni.yml names the same REST port, password and CA)."""
    api = from_config(config_file)
    host = lead.host.rpartition(":")[0] if lead.host.count(":") == 1 else lead.host
    return replace(api, name=lead.name, host=host or api.host)


def _check_reply(reply: tuple[int, str], leader: str, candidate: str) -> None:
    status, body = reply
    if status != 200:
        raise ProcessError(f"switchover {leader} -> {candidate}: Patroni answered "
                           f"{status}: {body.strip()}")


def failover(config_file: Path, candidate: str) -> str:
    """An unplanned promotion of `candidate` (when the leader is gone)."""
    return patronictl(config_file, "failover", "--candidate", candidate, "--force")


def restart(config_file: Path, scope: str, member: str | None = None,
            pending_only: bool = False) -> str:
    args = ["restart", scope, *([member] if member else []), "--force"]
    if pending_only:
        args.append("--pending")
    return patronictl(config_file, *args)


def reinit(config_file: Path, scope: str, member: str) -> str:
    return patronictl(config_file, "reinit", scope, member, "--force", "--wait")


def set_parameters(config_file: Path, parameters: dict[str, str]) -> str:
    """Change PostgreSQL settings in Patroni's dynamic configuration (every node)."""
    args = ["edit-config", "--force", "--quiet"]
    for name, value in sorted(parameters.items()):
        args += ["-p", f"{name}={value}"]
    return patronictl(config_file, *args)


def slot_name(member: str) -> str:
    """Patroni's slot for a member: its name with '-' and '.' as '_'."""
    return member.replace("-", "_").replace(".", "_").lower()


def ensure_member_slots(leader_dsn: str, member_names: list[str], leader: str) -> list[str]:
    """Recreate the physical slots of the leader's replicas that someone dropped.

    Patroni 3.0.2 caches the slots it made and rereads them only after a postmaster
    restart (or when permanent logical slots exist), so a slot dropped behind its
    back stays missing and that replica stops streaming. Creating it again with
    the name Patroni uses puts the cluster back where Patroni believes it is.
    Returns the slots created.
    """
    made = []
    with psycopg.connect(leader_dsn, autocommit=True, connect_timeout=10) as conn:
        have = {r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")}
        for m in member_names:
            name = slot_name(m)
            if m != leader and name not in have:
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
                made.append(name)
    return made
