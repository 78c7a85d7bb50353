"""What the backup commands need to know about a stack, read without running the program.

Paths come from the stack's config (Pulumi.<stack>.yaml through infra.config and
the local layout); the owner DSN comes from `pulumi stack output --show-secrets`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra import config
from infra.backends import local_layout
from infra.errors import ConfigError, PlatformError


@dataclass(frozen=True)
class StackBackup:
    config_path: Path
    stanza: str
    restores_dir: Path


def stack_config(stack: str, root: Path = local_layout.ROOT) -> config.PlatformConfig:
    """Parse Pulumi.<stack>.yaml as the program would (secure values are not needed here)."""
    path = root / f"Pulumi.{stack}.yaml"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"stack {stack!r}: cannot read {path}: {exc}") from None
    raw: dict[str, Any] = {}
    for key, value in (doc.get("config") or {}).items():
        project, _, name = str(key).partition(":")
        if project != config.PROJECT:
            continue
        if isinstance(value, dict) and "secure" in value:
            continue
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[name] = value
    return config.load(raw, stack)


def stack_backup(stack: str) -> StackBackup:
    cfg = stack_config(stack)
    if cfg.backend != "local":
        raise ConfigError(f"stack {stack!r} uses backend {cfg.backend!r}; these commands run "
                          "pgBackRest on this machine, for the local backend only; on other "
                          "backends run them on the database host, or pass --config/--stanza")
    lay = local_layout.layout(cfg)
    return StackBackup(config_path=lay.pgbackrest_conf, stanza=cfg.backup.stanza,
                       restores_dir=lay.restores)


def _pulumi_env(root: Path) -> dict[str, str]:
    """The settings of scripts/env.sh, unless the caller set them already."""
    env = dict(os.environ)
    env["PATH"] = f"{root / '.tools/bin'}:{root / '.venv/bin'}:{env.get('PATH', '')}"
    env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
    env.setdefault("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
    env.setdefault("PULUMI_HOME", str(root / ".state/pulumi-home"))
    env.setdefault("PULUMI_BACKEND_URL", f"file://{root / '.state/backend'}")
    env.setdefault("PULUMI_CONFIG_PASSPHRASE_FILE", str(root / ".state/passphrase"))
    return env


def stack_outputs(stack: str, root: Path = local_layout.ROOT) -> dict[str, Any]:
    """`pulumi stack output --json --show-secrets`; secrets stay in this process."""
    proc = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
        cwd=root, env=_pulumi_env(root), capture_output=True, text=True, timeout=120,
        check=False)
    if proc.returncode != 0:
        raise PlatformError(f"pulumi stack output for stack {stack!r} failed "
                            f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    data = json.loads(proc.stdout or "{}")
    return dict(data) if isinstance(data, dict) else {}
