"""The offline Pulumi environment, the one Python copy of scripts/env.sh and the Makefile.

The engine lives in .tools/bin (scripts/bootstrap builds it), its home and the
file:// backend under .state, the secrets passphrase in .state/passphrase.
Settings the caller's environment already has win, as they do with env.sh.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tools_dir(root: Path = ROOT) -> Path:
    """Where scripts/bootstrap puts the engine (`<tools>/bin/pulumi`)."""
    return root / ".tools"


def defaults(root: Path = ROOT) -> dict[str, str]:
    """env.sh's settings for a checkout at `root`."""
    return {
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_HOME": str(root / ".state" / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{root / '.state' / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(root / ".state" / "passphrase"),
        # The Python SDK's gRPC prints fork warnings when dynamic providers fork.
        "GRPC_ENABLE_FORK_SUPPORT": "false",
    }


def pulumi_env(root: Path = ROOT, base: Mapping[str, str] | None = None,
               overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """A full process environment for the engine: `base` (default: ours) plus env.sh's
    settings where `base` lacks them, then `overrides` (a throw-away stack's backend…)."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(tools_dir(root) / "bin"), str(root / ".venv" / "bin"),
                                   env.get("PATH", "")])
    for key, value in defaults(root).items():
        env.setdefault(key, value)
    env.update(overrides or {})
    if "PULUMI_CONFIG_PASSPHRASE" in (overrides or {}):
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)  # one passphrase source, not two
    return env
