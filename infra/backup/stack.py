"""What the backup commands need to know about a stack: its pgBackRest files and stanza.

Settings come from the stack (infra.ops.stack); where the files are is the
backend's to say (infra/backends/base.py, `local_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.backends import registry
from infra.errors import ConfigError
from infra.ops.stack import StackRef


@dataclass(frozen=True)
class StackBackup:
    config_path: Path
    stanza: str
    restores_dir: Path


def stack_backup(ref: StackRef) -> StackBackup:
    cfg = ref.config()
    files = registry.get(cfg.backend).local_files(cfg)
    if files is None:
        raise ConfigError(f"stack {ref.name!r} uses backend {cfg.backend!r}; these commands "
                          "run pgBackRest on this machine, for the local backend only; on "
                          "other backends run them on the database host, or pass "
                          "--config/--stanza")
    return StackBackup(config_path=files.pgbackrest_config, stanza=cfg.backup.stanza,
                       restores_dir=files.restores_dir)
