"""`python -m infra {schema,backup,health,cluster} …`: the ops commands behind one entry point.

    python -m infra schema status --stack local
    python -m infra backup drill  --stack local
    python -m infra health        --stack local
    python -m infra tenant-dsn SLUG --stack local [--direct]
    python -m infra drift         --stack local
    python -m infra cluster status --stack local    (ha.manager: patroni)

Every command follows one exit-code policy (infra/exitcodes.py). `--stack S`
reads what a command needs from the stack (infra/ops); for `schema` that is the
primary's owner DSN, the tenants and the app role, so no DSN goes on a command
line. `python -m infra.schema|backup|health` are aliases of the same commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.backup import cli as backup_cli
from infra.errors import PlatformError
from infra.exitcodes import ERROR
from infra.health import cli as health_cli
from infra.ops import cluster_cli
from infra.ops import drift as drift_cli
from infra.ops.env import ROOT
from infra.ops.stack import StackRef
from infra.schema import cli as schema_cli
from infra.schema import credentials


def schema(argv: Sequence[str]) -> int:
    """The SQL engine's commands; with `--stack`, against that stack's primary."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--stack")
    pre.add_argument("--project-dir", type=Path, default=ROOT)
    known, rest = pre.parse_known_args(argv)
    if not known.stack:
        return schema_cli.main(rest)
    ref = StackRef(known.stack, known.project_dir)
    try:
        cfg = ref.config()
        dsn = ref.outputs().get("primary_dsn")
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    if not isinstance(dsn, str):
        print(f"error: stack {known.stack!r} has no primary_dsn output; run `make up` first",
              file=sys.stderr)
        return ERROR
    tenants = [arg for t in cfg.tenants for arg in ("--tenant", f"{t.slug},{t.plan},{t.name}")]
    # In-process: the DSN never reaches a process list or an environment.
    return schema_cli.main([*rest, "--dsn", dsn, "--sql-dir", str(known.project_dir / "sql"),
                            "--app-role", cfg.postgres.app_role, *tenants])


def tenant_dsn(argv: Sequence[str]) -> int:
    """One tenant role's DSN (pooler, or the primary with --direct), from the stack's
    outputs: its password derives from the `tenant_key` output (infra/schema/credentials)."""
    ap = argparse.ArgumentParser(prog="python -m infra tenant-dsn")
    ap.add_argument("slug")
    ap.add_argument("--stack", required=True)
    ap.add_argument("--project-dir", type=Path, default=ROOT)
    ap.add_argument("--direct", action="store_true", help="the primary, not PgBouncer")
    args = ap.parse_args(argv)
    try:
        outs = StackRef(args.stack, args.project_dir).outputs()
        base, key = outs.get("primary_dsn" if args.direct else "pooler_dsn"), outs.get("tenant_key")
        if not isinstance(base, str) or not isinstance(key, str):
            raise PlatformError(f"stack {args.stack!r} has no pooler_dsn/tenant_key output; "
                                "run `make up` first")
        print(credentials.dsn(base, key, args.slug))
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "schema": schema,
    "tenant-dsn": tenant_dsn,
    "backup": lambda argv: backup_cli.main(list(argv)),
    "health": health_cli.main,
    "drift": drift_cli.main,
    "cluster": cluster_cli.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m infra {{{','.join(COMMANDS)}}} [--stack S] …\n\n{__doc__}",
              file=sys.stderr)
        return ERROR
    return COMMANDS[args[0]](args[1:])
