"""One stack, read through `pulumi.automation`: its settings and its outputs.

Secrets stay in this process: nothing here prints or logs them, and a
`StackRef`'s repr names the stack only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from infra import config
from infra.errors import PlatformError
from infra.ops.env import ROOT, pulumi_env, tools_dir


@dataclass(frozen=True)
class StackRef:
    """A stack of the project in `project_dir`; `env` overrides the engine's environment."""

    name: str
    project_dir: Path = ROOT
    env: Mapping[str, str] | None = field(default=None, repr=False)

    def environment(self) -> dict[str, str]:
        return pulumi_env(ROOT, overrides=self.env)

    @cached_property
    def _stack(self) -> auto.Stack:
        """Selected once per StackRef: each engine call costs a process."""
        env = self.environment()
        try:
            workspace = auto.LocalWorkspace(
                work_dir=str(self.project_dir), env_vars=env,
                pulumi_command=auto.PulumiCommand(root=str(tools_dir()),
                                                  skip_version_check=True))
            return auto.Stack.select(self.name, workspace)
        except auto.errors.CommandError as exc:
            raise PlatformError(f"stack {self.name!r} in {self.project_dir}: "
                                f"{_last_line(exc)}") from None

    def config(self) -> config.PlatformConfig:
        """The stack's settings, validated as the program would (secure values left out)."""
        try:
            values = self._stack.get_all_config()
        except auto.errors.CommandError as exc:
            raise PlatformError(f"stack {self.name!r}: reading its config failed: "
                                f"{_last_line(exc)}") from None
        plain = {k: v.value for k, v in values.items() if not v.secret}
        return config.load(config.decode(plain), self.name)

    def outputs(self) -> dict[str, Any]:
        """Every output, secrets decrypted; empty before the first `pulumi up`."""
        try:
            return {k: v.value for k, v in self._stack.outputs().items()}
        except auto.errors.CommandError as exc:
            raise PlatformError(f"stack {self.name!r}: reading its outputs failed: "
                                f"{_last_line(exc)}") from None


    def resources(self) -> list[dict[str, Any]]:
        """The resources in the stack's state (`pulumi stack export`; secrets stay encrypted)."""
        try:
            deployment = self._stack.export_stack().deployment or {}
        except auto.errors.CommandError as exc:
            raise PlatformError(f"stack {self.name!r}: reading its state failed: "
                                f"{_last_line(exc)}") from None
        return list(deployment.get("resources") or [])


def _last_line(exc: auto.errors.CommandError) -> str:
    """The engine's own message, without the command line (which may name files)."""
    lines = [ln[ln.index("error:"):] for ln in str(exc).splitlines() if "error:" in ln]
    return lines[-1].strip() if lines else str(exc).strip().splitlines()[-1][-500:]
