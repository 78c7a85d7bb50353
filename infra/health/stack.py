"""Where a stack's hosts are and how to log in: its outputs and config.

DSNs come from the stack's outputs (infra.ops.stack), the PgBouncer console's
from `pooler_admin_dsn`. Secrets stay in this process: nothing here prints or
logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import config
from infra.backends import registry
from infra.errors import PlatformError
from infra.ops.stack import StackRef


@dataclass(frozen=True)
class StackTargets:
    """Everything the probes need; DSNs are secrets."""

    cfg: config.PlatformConfig
    monitoring: config.MonitoringSettings
    primary_dsn: str
    replica_dsns: tuple[str, ...]
    pooler_admin_dsn: str | None
    pgbackrest_config: Path | None
    pooler_dsn: str | None = None
    # dev: pgbackrest runs in the primary container (`docker exec ...`), the config there.
    pgbackrest_exec: tuple[str, ...] = ()
    # The pg_monitor-only role (local stacks): statistics views show other sessions'
    # fields (replication state and lag) to pg_monitor members only.
    monitor_dsn: str | None = None

    @property
    def reader_dsn(self) -> str:
        """What every probe reads as: the monitoring role where there is one, else the owner."""
        return self.monitor_dsn or self.primary_dsn

    @property
    def replica_reader_dsns(self) -> tuple[str, ...]:
        """The replicas (the outputs name the app role) as the monitoring role."""
        if not self.monitor_dsn:
            return self.replica_dsns
        who = conninfo_to_dict(self.monitor_dsn)
        return tuple(make_conninfo(d, user=str(who["user"]), password=str(who["password"]))
                     for d in self.replica_dsns)

    def __repr__(self) -> str:  # never show DSNs, even in a traceback
        return f"StackTargets(stack={self.cfg.stack!r}, replicas={len(self.replica_dsns)})"


def load(ref: StackRef) -> StackTargets:
    cfg = ref.config()
    outputs = ref.outputs()
    primary = outputs.get("primary_dsn")
    if not isinstance(primary, str):
        raise PlatformError(f"stack {ref.name!r} has no primary_dsn output; run `pulumi up` "
                            "first")
    pooler_admin = outputs.get("pooler_admin_dsn")
    backend = registry.get(cfg.backend)
    files = backend.local_files(cfg)
    pgbr = files.pgbackrest_config if files and files.pgbackrest_config.exists() else None
    remote = backend.remote_pgbackrest(cfg) if files is None else None
    return StackTargets(cfg=cfg, monitoring=cfg.monitoring, primary_dsn=primary,
                        replica_dsns=tuple(outputs.get("replica_dsns") or ()),
                        pooler_admin_dsn=pooler_admin if isinstance(pooler_admin, str) else None,
                        pgbackrest_config=remote.config if remote else pgbr,
                        pgbackrest_exec=remote.exec_prefix if remote else (),
                        pooler_dsn=pooled if isinstance(pooled := outputs.get("pooler_dsn"),
                                                        str) else None,
                        monitor_dsn=mon if isinstance(mon := outputs.get("monitor_dsn"),
                                                      str) else None)
