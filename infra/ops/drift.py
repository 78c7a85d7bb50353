"""`python -m infra drift --stack S`: the drift the last `pulumi refresh` recorded.

The local providers' `read()` puts what it finds (a hand-edited rendered file,
an ALTER SYSTEM override, a replica's missing slot; infra/hostctl/drift.py)
in each resource's `drift` output. `pulumi refresh` stores it but, for dynamic
providers, only shows the resource as `~ update`; this command lists the
findings, one line each, by resource. `make refresh` runs it after the
refresh. Exit 0 when there is none, 1 (attention) when there is some: the
next `pulumi up` repairs it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.errors import PlatformError
from infra.exitcodes import ATTENTION, ERROR, OK
from infra.ops.env import ROOT
from infra.ops.stack import StackRef


def findings(ref: StackRef) -> list[tuple[str, str]]:
    """(resource name, finding) for every drift the state records."""
    out: list[tuple[str, str]] = []
    for resource in ref.resources():
        drift = (resource.get("outputs") or {}).get("drift")
        if isinstance(drift, list):
            name = str(resource.get("urn", "")).rsplit("::", 1)[-1]
            out.extend((name, str(item)) for item in drift)
    return out


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra drift")
    ap.add_argument("--stack", required=True)
    ap.add_argument("--project-dir", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    try:
        found = findings(StackRef(args.stack, args.project_dir))
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    for name, item in found:
        print(f"{name}: {item}")
    if not found:
        print(f"stack {args.stack!r}: no drift recorded by the last refresh")
        return OK
    print(f"{len(found)} drift(s); `pulumi up` (make up) repairs them", file=sys.stderr)
    return ATTENTION
