"""The verdict: thresholds from `pg-platform:monitoring` applied to what the probes found.

Pure, so every rule is unit-tested without a server. The rules match the
Prometheus alert rules rendered from the same settings: an outage of the write
path (the primary, the pooler, exhausted connections) is unhealthy; anything
that loses redundancy, recoverability or freshness is degraded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from infra.backup import schedule as backup_schedule
from infra.config import MonitoringSettings
from infra.health.model import DEGRADED, HEALTHY, UNHEALTHY, Node, Reason, Report
from infra.timescaledb.health import reasons as timescaledb_reasons


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"


def _node_reasons(node: Node, mon: MonitoringSettings) -> list[Reason]:
    critical = UNHEALTHY if node.expected_role == "primary" else DEGRADED
    if not node.up:
        return [Reason(critical, node.name, f"{node.expected_role} is down: {node.error}")]
    out: list[Reason] = []
    if node.role != node.expected_role:
        out.append(Reason(critical, node.name,
                          f"runs as {node.role}, expected {node.expected_role}"))
    usable = node.usable_connections
    if usable and node.connections is not None:
        pct = 100 * node.connections / usable
        used = f"{node.connections} of {usable} usable connections ({pct:.0f}%)"
        if pct >= mon.connections_critical_percent:
            out.append(Reason(UNHEALTHY, node.name,
                              f"{used}, at or over {mon.connections_critical_percent}%"))
        elif pct >= mon.connections_warn_percent:
            out.append(Reason(DEGRADED, node.name,
                              f"{used}, at or over {mon.connections_warn_percent}%"))
    if node.expected_role == "replica":
        if node.replication_state != "streaming":
            out.append(Reason(DEGRADED, node.name,
                              f"replication state is {node.replication_state or 'unknown'}, "
                              "not streaming"))
        if node.lag_seconds is not None and node.lag_seconds > mon.replication_lag_seconds:
            out.append(Reason(DEGRADED, node.name,
                              f"replay lag {node.lag_seconds:.0f}s exceeds "
                              f"{mon.replication_lag_seconds}s"))
        if node.lag_bytes is not None and node.lag_bytes > mon.replication_lag_bytes:
            out.append(Reason(DEGRADED, node.name,
                              f"replay lag {_mib(node.lag_bytes)} exceeds "
                              f"{_mib(mon.replication_lag_bytes)}"))
    return out


def _pooler_reasons(report: Report, mon: MonitoringSettings) -> list[Reason]:
    pooler = report.pooler
    if pooler is None:
        return []
    if not pooler.up:
        return [Reason(UNHEALTHY, "pooler", f"PgBouncer is unreachable: {pooler.error}")]
    out: list[Reason] = []
    if pooler.read_only_error:
        out.append(Reason(DEGRADED, "pooler", "the read-only pool refuses logins: "
                          f"{pooler.read_only_error}"))
    for p in pooler.pools:
        where = f"pool {p.database}/{p.user}"
        if p.cl_waiting >= mon.pool_waiting_clients:
            out.append(Reason(DEGRADED, "pooler", f"{where}: {p.cl_waiting} client(s) waiting "
                              f"for a server connection (threshold {mon.pool_waiting_clients})"))
        if p.maxwait_seconds > mon.pool_maxwait_seconds:
            out.append(Reason(DEGRADED, "pooler", f"{where}: oldest client waited "
                              f"{p.maxwait_seconds:.1f}s (threshold {mon.pool_maxwait_seconds}s)"))
    return out


def _backup_reasons(report: Report, full_max_age: int,
                    schedule: Mapping[str, str] | None = None,
                    grace: timedelta = timedelta(0), now: datetime | None = None,
                    explicit_full_max_age: bool = False) -> list[Reason]:
    """Missing or late backups and failing archiving.

    With `schedule`, each type is judged against its own cron, every field of it
    (a monthly full is not late two days after it ran); the full backup keeps the
    plain age limit when the stack sets `monitoring.full_backup_max_age_hours`.
    """
    b = report.backups
    if not b.available:
        return [Reason(DEGRADED, "backups", f"backup state unknown: {b.error}")]
    out: list[Reason] = []
    full = b.age_seconds.get("full")
    if full is None:
        out.append(Reason(DEGRADED, "backups", "no full backup exists"))
    elif (schedule is None or explicit_full_max_age) and full > full_max_age:
        out.append(Reason(DEGRADED, "backups", f"newest full backup is {_hours(full)} old; "
                          f"the schedule allows {_hours(full_max_age)}"))
    if schedule is not None:
        for f in backup_schedule.freshness_from_ages(schedule, b.age_seconds,
                                                     now or datetime.now(UTC), grace):
            b.expected_since[f.kind], b.late[f.kind] = f.expected_since, f.late
            skip = f.kind == "full" and (full is None or explicit_full_max_age)
            if f.late and not skip:
                out.append(Reason(DEGRADED, "backups", f.message()))
    if b.archive_failing:
        out.append(Reason(DEGRADED, "backups",
                          "WAL archiving is failing: the last attempt failed after the last "
                          f"success ({b.archive_failed_count} failure(s) in total)"))
    return out


def _schema_reasons(report: Report) -> list[Reason]:
    s = report.schema
    if not s.available:
        return [Reason(DEGRADED, "schema", f"schema state unknown: {s.error}")]
    out = [Reason(DEGRADED, "schema", problem) for problem in s.problems]
    if s.pending:
        shown = ", ".join(s.pending[:5]) + (" …" if len(s.pending) > 5 else "")
        out.append(Reason(DEGRADED, "schema", f"{len(s.pending)} migration(s) pending: {shown}"))
    return out


def evaluate(report: Report, mon: MonitoringSettings, full_max_age: int,
             schedule: Mapping[str, str] | None = None, now: datetime | None = None) -> Report:
    """Fill in `status` and `reasons`; the worst reason decides the status.

    `schedule` (type -> cron) judges each backup type against its own schedule,
    with `monitoring.backup_grace_hours` for a run to finish.
    """
    reasons: list[Reason] = []
    for node in report.nodes:
        reasons += _node_reasons(node, mon)
    reasons += _pooler_reasons(report, mon)
    reasons += _backup_reasons(report, full_max_age, schedule,
                               timedelta(hours=mon.backup_grace_hours), now,
                               explicit_full_max_age=bool(mon.full_backup_max_age_hours))
    reasons += _schema_reasons(report)
    reasons += [Reason(level, "timescaledb", msg)
                for level, msg in timescaledb_reasons(report.timescaledb)]
    report.reasons = reasons
    levels = {r.level for r in reasons}
    report.status = (UNHEALTHY if UNHEALTHY in levels
                     else DEGRADED if DEGRADED in levels else HEALTHY)
    return report
