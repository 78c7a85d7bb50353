"""Whether a `pulumi up` may skip its preview: only when the stack holds no resource yet.

`pulumi up` runs the program twice, a preview and then the update. The preview of a
stack that holds nothing can only list creates: every guard that refuses a change
which would delete data (infra/data_loss.py, local_move, a manager switch) compares
a resource's old inputs with its new ones, and there are none. The checks that do not
need old inputs (the settings, the neighbours, every rendered file past its own tool,
refuse_manager_switch over a state dir that already holds a cluster) run in the
program, which the update runs too, before it registers a resource. So on an empty
stack the preview protects nothing and costs a program run (seconds). A stack with
any resource, or with an operation left pending by an interrupted `up`, keeps its
preview; so does a stack whose state cannot be read.

    python -m infra.ops.first_up --stack S [--cwd DIR]   # prints `--skip-preview` or nothing

The Makefile's `up` and the tests' and benchmarks' throw-away stacks
(tests/engine.py) use it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.hostctl import proc

SKIP = "--skip-preview"
# What the engine records even for an `up` whose program stopped before it registered
# anything (a refused setting): the stack's root and its default providers hold no data.
_NO_DATA = ("pulumi:pulumi:Stack", "pulumi:providers:")


def holds_resources(exported: Mapping[str, Any]) -> bool:
    """`pulumi stack export`'s document names a resource other than the stack's root and
    providers, or any pending operation."""
    deployment = exported.get("deployment") or {}
    if deployment.get("pending_operations"):
        return True
    return any(not str(r.get("type", "")).startswith(_NO_DATA)
               for r in deployment.get("resources") or [])


def up_flags(stack: str, cwd: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """`[SKIP]` for a stack that holds nothing, else `[]` (also when its state is unreadable).

    The export carries secrets only as ciphertext (no --show-secrets) and never leaves
    this function."""
    try:
        exported = json.loads(proc.run(
            ["pulumi", "--cwd", str(cwd), "stack", "export", "--stack", stack,
             "--non-interactive"], what=f"pulumi stack export --stack {stack}",
            env=dict(env) if env else None, switch_user=False))
    except Exception:   # unreadable state, a timeout, bad JSON: keep the preview
        exported = None
    if not isinstance(exported, dict) or holds_resources(exported):
        return []
    return [SKIP]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print --skip-preview for a stack with no "
                                             "resources (a first `up`), else nothing.")
    ap.add_argument("--stack", required=True)
    ap.add_argument("--cwd", type=Path, default=Path.cwd())
    args = ap.parse_args(argv)
    print(" ".join(up_flags(args.stack, args.cwd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
