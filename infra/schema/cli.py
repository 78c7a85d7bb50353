"""``python -m infra.schema {status,plan,apply,validate,repair} --dsn DSN``.

The only layer that prints. Errors go to stderr as one readable line, and
the exit status follows infra/exitcodes.py, the same for every command
(sql/README.md):

* 0: up to date (status, plan), valid (validate), done (apply, repair);
* 1: something is pending (status, plan), or refused: an edited applied
  file, a missing file, an out-of-order version, a syntax error, a refused
  statement (validate, apply, and status/plan, which show what apply would refuse);
* 2: an error: the database could not be reached, a migration failed while
  running, the lock did not come free, or the arguments are wrong.

``validate`` without a DSN checks the files alone. The DSN may come from
``$PGPLATFORM_DSN`` so that it stays out of shell history.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from infra.errors import MigrationRefused, PlatformError
from infra.exitcodes import ATTENTION, ERROR, OK
from infra.schema import credentials, engine
from infra.schema.plan import Plan
from infra.schema.progress import ProgressBar
from infra.schema.status import table
from infra.schema.tenants import TenantSpec

COMMANDS = ("status", "plan", "apply", "validate", "repair", "tenant-dsn")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m infra.schema",
                                 description="pg-platform's versioned SQL engine")
    ap.add_argument("command", choices=COMMANDS)
    ap.add_argument("slug", nargs="?", help="tenant-dsn: the tenant whose DSN to print")
    ap.add_argument("--dsn", default=os.environ.get("PGPLATFORM_DSN"),
                    help="direct owner-role DSN (never the pooler); default $PGPLATFORM_DSN")
    ap.add_argument("--sql-dir", default="sql", help="folder with schema/, tenant/, policies/")
    ap.add_argument("--tenant", action="append", default=[], metavar="SLUG[,PLAN[,NAME]]",
                    help="a stack-config tenant to register (repeatable)")
    ap.add_argument("--app-role", default="app", help="the application role's name")
    ap.add_argument("--workers", type=int, default=4,
                    help="connections used to migrate tenant schemas in parallel")
    ap.add_argument("--lock-timeout", type=float, default=600.0,
                    help="seconds to wait for another apply")
    ap.add_argument("--tenant-key-file", default=os.environ.get("PGPLATFORM_TENANT_KEY_FILE"),
                    help="0600 file with the secret tenant passwords derive from")
    ap.add_argument("--tenant-quota", type=int, default=None,
                    help="most tenants create_tenant may register")
    ap.add_argument("--detailed-exitcode", action="store_true",
                    help="accepted for compatibility; plan and status always exit 1 "
                         "when something is pending")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    return ap


def _tenant(raw: str) -> TenantSpec:
    slug, plan, name = ([*raw.split(",", 2), "", ""])[:3]
    return TenantSpec(slug=slug, name=name or slug, plan=plan or "standard")


def _describe_plan(p: Plan) -> list[str]:
    lines = [f"upgrade {what}" for what in p.engine_pending]
    lines += [f"apply {m.ref}" for m in p.schema_pending]
    lines += [f"register tenant {t.slug} ({t.plan})" for t in p.unregistered]
    for w in p.tenant_work[:20]:
        verb = "migrate" if w.schema_exists else \
            "recreate missing" if w.stale_history else "create"
        files = ", ".join(m.script for m in w.pending) or "(schema only)"
        lines.append(f"{verb} tenant schema {w.schema}: {files}")
    if len(p.tenant_work) > 20:
        lines.append(f"... and {len(p.tenant_work) - 20} more tenant schemas")
    lines += [f"apply {m.ref}" for m in p.policies_pending]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.dsn and args.command != "validate":
        print("error: --dsn (or $PGPLATFORM_DSN) is required", file=sys.stderr)
        return ERROR
    try:
        key = credentials.read_key_file(args.tenant_key_file) if args.tenant_key_file else None
        if args.command == "tenant-dsn":
            return _tenant_dsn(args, key)
        opts = engine.Options(sql_dir=Path(args.sql_dir),
                              tenants=tuple(_tenant(t) for t in args.tenant),
                              app_role=args.app_role, workers=max(1, args.workers),
                              lock_timeout=args.lock_timeout, tenant_key=key,
                              tenant_quota=args.tenant_quota)
        return _run(args, opts)
    except MigrationRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return ATTENTION
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    except psycopg.Error as exc:
        # psycopg's messages name host and port at most, never the password.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: database: {first}", file=sys.stderr)
        return ERROR


def _tenant_dsn(args: argparse.Namespace, key: str | None) -> int:
    """One tenant's DSN: the base DSN's host, port, database and TLS, the tenant's role."""
    if not args.slug:
        print("error: tenant-dsn needs a SLUG", file=sys.stderr)
        return ERROR
    if not key:
        print("error: tenant-dsn needs --tenant-key-file (or $PGPLATFORM_TENANT_KEY_FILE)",
              file=sys.stderr)
        return ERROR
    print(credentials.dsn(str(args.dsn), key, args.slug))
    return OK


def _run(args: argparse.Namespace, opts: engine.Options) -> int:
    cmd = args.command
    if cmd in ("status", "plan"):
        if cmd == "status":
            p, rows = engine.status(args.dsn, opts)
            print(table(rows))
        else:
            p = engine.plan(args.dsn, opts)
            for line in _describe_plan(p) or ["nothing to do"]:
                print(line)
        problems = p.problems()
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        if problems:
            print(f"\nrefused: apply would stop on {len(problems)} problem(s)")
            return ATTENTION
        up_to_date = p.is_noop and p.history_exists
        if cmd == "status":
            print(f"\n{'up to date' if up_to_date else 'changes pending'}")
        return OK if up_to_date else ATTENTION
    if cmd == "validate":
        v = engine.validate(args.dsn, opts)
        pending = len(v.plan.pending_files()) if v.plan else 0
        against = f"; {pending} file(s) pending" if v.plan else " (files only: no --dsn)"
        print(f"valid: {v.files} file(s) parse and pass the checks{against}")
        return OK
    if cmd == "repair":
        done = engine.repair(args.dsn, opts)
        for line in done or ["nothing to repair"]:
            print(line)
        return OK
    result = engine.apply(args.dsn, opts, on_progress=ProgressBar())
    for version in result.engine_versions:
        print(f"upgraded the engine's history schema to version {version}")
    for ref in result.applied:
        print(f"applied {ref}")
    if result.tenants_created:
        print(f"created {len(result.tenants_created)} tenant schema(s)")
    print(f"{'done' if result.changed else 'nothing to do'} in {result.seconds:.2f}s")
    return OK
