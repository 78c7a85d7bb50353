"""What the probes found: plain dataclasses, turned into JSON as they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from infra.exitcodes import ATTENTION, ERROR, OK
from infra.timescaledb.jobs import TimescaleJobs

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
EXIT_CODES = {HEALTHY: OK, DEGRADED: ATTENTION, UNHEALTHY: ERROR}  # infra/exitcodes.py
BACKUP_TYPES = ("full", "diff", "incr")


@dataclass
class Node:
    name: str
    expected_role: str
    up: bool = False
    role: str | None = None
    version: str | None = None
    connections: int | None = None
    max_connections: int | None = None
    reserved_connections: int | None = None
    replication_state: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    error: str | None = None

    @property
    def usable_connections(self) -> int | None:
        if self.max_connections is None:
            return None
        return self.max_connections - (self.reserved_connections or 0)


@dataclass
class Pool:
    database: str
    user: str
    cl_active: int
    cl_waiting: int
    sv_active: int
    sv_idle: int
    maxwait_seconds: float


@dataclass
class Pooler:
    up: bool = False
    pools: list[Pool] = field(default_factory=list)
    error: str | None = None
    # The read-only entry (`<database>_ro`), probed with a real login through PgBouncer:
    # None when not probed (no replicas), "" when it answered from a replica.
    read_only_error: str | None = None


@dataclass
class Backups:
    available: bool = False
    # Seconds since the newest backup of each type finished; None when there is none.
    age_seconds: dict[str, float | None] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    # Each scheduled type against its cron (infra/backup/schedule.py): the run that should
    # be done by now, and whether a backup of that type (or a larger one) followed it.
    expected_since: dict[str, str | None] = field(default_factory=dict)
    late: dict[str, bool] = field(default_factory=dict)
    last_archived_wal: str | None = None
    last_archived_age_seconds: float | None = None
    archive_failed_count: int | None = None
    archive_failing: bool = False
    source: str | None = None
    error: str | None = None


@dataclass
class Schema:
    available: bool = False
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tenants: int | None = None
    error: str | None = None


@dataclass
class Reason:
    level: str
    component: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.component}: {self.message}"


@dataclass
class Report:
    stack: str
    status: str = HEALTHY
    reasons: list[Reason] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    pooler: Pooler | None = None
    backups: Backups = field(default_factory=Backups)
    schema: Schema = field(default_factory=Schema)
    timescaledb: TimescaleJobs | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
