"""`python -m infra.backup`: backups, point-in-time restore and the restore drill.

    python -m infra.backup info    --stack local
    python -m infra.backup check   --stack local
    python -m infra.backup backup  --stack local --type incr
    python -m infra.backup run     --stack local --type incr   # what the schedule runs
    python -m infra.backup restore --stack local --target '2026-11-22 10:00:00+00'
    python -m infra.backup drill   --stack local

`--stack` reads the stack's config (paths, stanza) and outputs (the owner DSN);
`--config`, `--stanza`, `--passfile`, `--dsn` and `--restores-dir` set them
explicitly instead, for hosts that are not the local stack's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from infra.backup import drill, restore
from infra.backup.stack import stack_backup
from infra.dsn import conninfo
from infra.errors import PlatformError
from infra.exitcodes import ATTENTION, ERROR, OK
from infra.hostctl.pgbackrest import BACKUP_TYPES, PgBackRest, backups
from infra.ops.stack import StackRef

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", help="read paths and the owner DSN from this stack")
    common.add_argument("--config", type=Path, help="pgbackrest.conf (overrides --stack)")
    common.add_argument("--stanza", help="pgBackRest stanza (overrides --stack)")
    common.add_argument("--passfile", type=Path, help="libpq passfile for check/backup")
    common.add_argument("--dsn", help="owner DSN of the primary (overrides --stack)")
    common.add_argument("--restores-dir", type=Path, help="where restored copies go")
    common.add_argument("-v", "--verbose", action="store_true")
    parser = argparse.ArgumentParser(prog="python -m infra.backup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", parents=[common], help="pgbackrest info (JSON)")
    sub.add_parser("check", parents=[common], help="pgbackrest check (archiving works)")
    p = sub.add_parser("backup", parents=[common], help="take a backup now")
    p.add_argument("--type", choices=BACKUP_TYPES, default="incr")
    p = sub.add_parser("run", parents=[common],
                       help="the scheduled backup: as the service user, by peer (or "
                            "--passfile), no DSN needed")
    p.add_argument("--type", choices=BACKUP_TYPES, required=True)
    p = sub.add_parser("restore", parents=[common],
                       help="restore into a new data dir and start it on a free port")
    p.add_argument("--target", help="recovery target time, e.g. '2026-11-22 10:00:00+00'; "
                                    "omit for the end of the archive")
    p = sub.add_parser("drill", parents=[common], help="prove a point-in-time restore")
    p.add_argument("--rows", type=int, default=25, help="marker rows on each side of T")
    p.add_argument("--keep", action="store_true", help="leave the restored copy running")
    return parser


def _resolve(args: argparse.Namespace, need_dsn: bool) -> tuple[PgBackRest, Path, str | None]:
    config, stanza, passfile = args.config, args.stanza, args.passfile
    restores_dir, dsn = args.restores_dir, args.dsn
    if args.stack:
        ref = StackRef(args.stack)
        sb = stack_backup(ref)
        config, stanza = config or sb.config_path, stanza or sb.stanza
        restores_dir = restores_dir or sb.restores_dir
        if need_dsn and not dsn:
            dsn = ref.outputs().get("primary_dsn")
            if not dsn:
                raise PlatformError(f"stack {args.stack!r} has no primary_dsn output; "
                                    "run `make up` first or pass --dsn")
    if not config or not stanza:
        raise PlatformError("give --stack, or both --config and --stanza")
    if need_dsn and not dsn:
        raise PlatformError("this command needs the primary's owner DSN: --stack or --dsn")
    # The owner's password goes to pgbackrest in its environment, fetched at run time.
    password = conninfo_to_dict(dsn).get("password") if dsn else None
    return (PgBackRest(config=config, stanza=stanza, passfile=passfile,
                       password=str(password) if password else None),
            restores_dir or config.parent.parent / "restores", dsn)


def run_scheduled(pgbr: PgBackRest, kind: str) -> str:
    """One scheduled backup, exactly as the local scheduler and the hosts' timers run it:
    pgBackRest as the service user, on the primary's socket by peer (or the passfile)."""
    started = time.monotonic()
    pgbr.backup(kind, start_fast=True)
    newest = [b for b in backups(pgbr.info()) if b.get("type") == kind]
    label = newest[-1]["label"] if newest else "?"
    return (f"{kind} backup {label} of stanza {pgbr.stanza} done in "
            f"{time.monotonic() - started:.1f}s")


def _public(dsn: str) -> str:
    """A DSN without its password, for people to read."""
    return conninfo(dsn, password=None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # check and backup connect to PostgreSQL: the password comes from the DSN
        # (the stack's primary_dsn output) unless a passfile is given.
        needs_dsn = args.command in ("drill", "restore") or (
            args.command in ("check", "backup") and not args.passfile)
        pgbr, restores_dir, dsn = _resolve(args, need_dsn=needs_dsn)
        if args.command == "info":
            print(json.dumps(pgbr.info(), indent=2))
        elif args.command == "check":
            pgbr.check()
            print(f"pgbackrest check passed for stanza {pgbr.stanza}")
        elif args.command == "backup":
            pgbr.backup(args.type)
            print(f"{args.type} backup of stanza {pgbr.stanza} done")
        elif args.command == "run":
            print(run_scheduled(pgbr, args.type))
        elif args.command == "restore":
            assert dsn is not None
            workdir = restore.new_workdir(restores_dir)
            copy = restore.restore(pgbr, workdir, target=args.target, primary_dsn=dsn)
            try:
                restore.wait_promoted(copy, copy.local_dsn(dsn))
            except BaseException:
                copy.remove()  # a failed restore leaves nothing behind
                raise
            copy_dsn = copy.tcp_dsn(dsn)
            print(f"restored stanza {pgbr.stanza} to {args.target or 'end of archive'} "
                  f"into {copy.server.data_dir}")
            print(f"running on {copy.server.host}:{copy.server.port}: {_public(copy_dsn)} "
                  "(the stack's owner password)")
            print(f"stop and remove it: pg_ctl stop -D {copy.server.data_dir} && "
                  f"rm -r {workdir}")
        elif args.command == "drill":
            assert dsn is not None
            report = drill.run_drill(pgbr, dsn, restores_dir, rows=args.rows, keep=args.keep)
            print("\n".join(report.lines()))
            return OK if report.ok else ATTENTION
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    return OK
