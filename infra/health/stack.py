"""Where a stack's hosts are and how to log in: its outputs and config.

DSNs come from `pulumi stack output --show-secrets`, the PgBouncer console's
from `pooler_admin_dsn`. Secrets stay in this process: nothing here prints or
logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra import config
from infra.backends import local_layout
from infra.backup import stack as backup_stack
from infra.config import MonitoringSettings
from infra.errors import PlatformError

ROOT = local_layout.ROOT


@dataclass(frozen=True)
class StackTargets:
    """Everything the probes need; DSNs are secrets."""

    cfg: config.PlatformConfig
    monitoring: MonitoringSettings
    primary_dsn: str
    replica_dsns: tuple[str, ...]
    pooler_admin_dsn: str | None
    pgbackrest_config: Path | None

    def __repr__(self) -> str:  # never show DSNs, even in a traceback
        return f"StackTargets(stack={self.cfg.stack!r}, replicas={len(self.replica_dsns)})"


def load(stack: str, root: Path = ROOT) -> StackTargets:
    cfg = backup_stack.stack_config(stack, root)
    outputs = backup_stack.stack_outputs(stack, root)
    primary = outputs.get("primary_dsn")
    if not isinstance(primary, str):
        raise PlatformError(f"stack {stack!r} has no primary_dsn output; run `pulumi up` first")
    pooler_admin = outputs.get("pooler_admin_dsn")
    pgbr: Path | None = None
    if cfg.backend == "local":
        candidate = local_layout.layout(cfg).pgbackrest_conf
        pgbr = candidate if candidate.exists() else None
    return StackTargets(cfg=cfg, monitoring=cfg.monitoring, primary_dsn=primary,
                        replica_dsns=tuple(outputs.get("replica_dsns") or ()),
                        pooler_admin_dsn=pooler_admin if isinstance(pooler_admin, str) else None,
                        pgbackrest_config=pgbr)
