"""Throw-away stacks of this repository's program, run through the real engine.

Each stack lives in a scratch project folder that links to the repository's
program, with its own file:// backend, passphrase, stack file and state
directory, so tests never touch the user's stacks or the repository's files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from infra.backends.local_layout import layout
from infra.ops import first_up
from infra.ops.env import pulumi_env
from infra.ops.stack import StackRef
from tests.support import scratch_dir

ROOT = Path(__file__).resolve().parents[1]


def engine_env(base: Path, passphrase: str) -> dict[str, str]:
    """The repository's engine settings (infra/ops/env.py) with this stack's own backend."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return pulumi_env(ROOT, base=clean, overrides={
        "PULUMI_BACKEND_URL": f"file://{base / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
    })


class ThrowawayStack:
    """A stack named `name` with `config` (keys without the project prefix)."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.base = scratch_dir("pgp-stack-")
        (self.base / "backend").mkdir()
        self.project = self.base / "project"
        self.project.mkdir()
        for entry in ("__main__.py", "infra", "templates"):
            (self.project / entry).symlink_to(ROOT / entry)
        # A copy, so a test can add a migration without touching the repository.
        shutil.copytree(ROOT / "sql", self.project / "sql")
        pulumi_yaml = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
        pulumi_yaml["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml))
        self.passphrase = secrets.token_urlsafe(24)
        self.env = engine_env(self.base, self.passphrase)
        self.config_file = self.project / f"Pulumi.{name}.yaml"
        self.state_dir = self.base / "state"
        self.set_config(config)

    def set_config(self, config: dict[str, Any]) -> None:
        """Replace the stack's settings, keeping the secrets salt `stack init` wrote."""
        values = {"state_dir": str(self.state_dir), **config}
        doc = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else {}
        doc = doc or {}
        doc["config"] = {f"pg-platform:{k}": v for k, v in values.items()}
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=True))

    def pulumi(self, *args: str, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = ["pulumi", *args, "--stack", self.name, "--non-interactive"]
        proc = subprocess.run(argv, cwd=self.project, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    @property
    def ref(self) -> StackRef:
        """This stack for infra.ops (settings and outputs through pulumi.automation)."""
        return StackRef(self.name, self.project, self.env)

    def init(self) -> None:
        self.pulumi("stack", "init")

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`pulumi up`, without its preview while the stack holds nothing (as `make up`:
        infra/ops/first_up.py says why that is safe)."""
        flags = first_up.up_flags(self.name, self.project, self.env)
        return self.pulumi("up", "--yes", *flags, *extra)

    def preview(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pulumi("preview", "--diff", *extra, check=check)

    def outputs(self) -> dict[str, Any]:
        proc = self.pulumi("stack", "output", "--json", "--show-secrets")
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def drill(self, rows: int) -> subprocess.CompletedProcess[str]:
        """`python -m infra backup drill` on this stack's repository, as users run it."""
        cfg = self.ref.config()
        lay = layout(cfg)
        return subprocess.run(
            [sys.executable, "-m", "infra", "backup", "drill", "--rows", str(rows),
             "--config", str(lay.pgbackrest_conf), "--stanza", cfg.backup.stanza,
             "--dsn", self.outputs()["primary_dsn"], "--restores-dir", str(lay.restores)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=300, check=False)

    def destroy(self) -> None:
        self.pulumi("destroy", "--yes")

    def remove(self) -> None:
        """Destroy whatever is left and delete every file of the stack."""
        try:
            self.pulumi("destroy", "--yes", check=False)
            self.pulumi("stack", "rm", "--yes", "--force", check=False)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def stack_up(name: str, config: dict[str, Any]) -> Iterator[ThrowawayStack]:
    """A throw-away stack after its first `up`; removed, with all its files, afterwards."""
    stack = ThrowawayStack(name, config)
    try:
        stack.init()
        stack.up()
        yield stack
    finally:
        stack.remove()
