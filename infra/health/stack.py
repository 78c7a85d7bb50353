"""Where a stack's hosts are and how to log in: its outputs, config and, for the
PgBouncer console, its state.

DSNs come from `pulumi stack output --show-secrets`. The stack outputs name no
PgBouncer console user, so the console's DSN is built from `pooler_dsn`'s
host and port and the `<admin_user>-password` secret in the stack's state
(`pulumi stack export --show-secrets`), unless a `pooler_admin_dsn` output
exists. Secrets stay in this process: nothing here prints or logs them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from infra import config
from infra.backends import local_layout
from infra.backup import stack as backup_stack
from infra.config_monitoring import MonitoringSettings
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


def _plain(value: Any) -> Any:
    """A state value as `stack export --show-secrets` writes it: plain, or wrapped."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def state_secret(stack: str, resource_name: str, key: str = "value",
                 root: Path = ROOT) -> str | None:
    """One output of one resource of the stack's state, by the resource's name."""
    proc = subprocess.run(
        ["pulumi", "stack", "export", "--show-secrets", "--stack", stack],
        cwd=root, env=backup_stack._pulumi_env(root), capture_output=True, text=True,
        timeout=120, check=False)
    if proc.returncode != 0:
        raise PlatformError(f"pulumi stack export for stack {stack!r} failed "
                            f"(exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    for res in json.loads(proc.stdout).get("deployment", {}).get("resources", []):
        if str(res.get("urn", "")).endswith(f"::{resource_name}"):
            value = _plain((res.get("outputs") or {}).get(key))
            return str(value) if value is not None else None
    return None


def admin_dsn(pooler_dsn: str, user: str, password: str) -> str:
    """The console's DSN: the pooler's host and port, database `pgbouncer`."""
    parts = urlsplit(pooler_dsn)
    host = parts.hostname or "127.0.0.1"
    return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:"
            f"{parts.port or 6432}/pgbouncer")


def load(stack: str, root: Path = ROOT) -> StackTargets:
    cfg = backup_stack.stack_config(stack, root)
    outputs = backup_stack.stack_outputs(stack, root)
    primary = outputs.get("primary_dsn")
    if not isinstance(primary, str):
        raise PlatformError(f"stack {stack!r} has no primary_dsn output; run `pulumi up` first")
    pooler_admin = outputs.get("pooler_admin_dsn")
    if not isinstance(pooler_admin, str) and isinstance(outputs.get("pooler_dsn"), str):
        password = state_secret(stack, f"{cfg.pooler.admin_user}-password", root=root)
        pooler_admin = (admin_dsn(outputs["pooler_dsn"], cfg.pooler.admin_user, password)
                        if password else None)
    pgbr: Path | None = None
    if cfg.backend == "local":
        candidate = local_layout.layout(cfg).pgbackrest_conf
        pgbr = candidate if candidate.exists() else None
    return StackTargets(cfg=cfg, monitoring=cfg.monitoring, primary_dsn=primary,
                        replica_dsns=tuple(outputs.get("replica_dsns") or ()),
                        pooler_admin_dsn=pooler_admin if isinstance(pooler_admin, str) else None,
                        pgbackrest_config=pgbr)
