"""The local stack's backup scheduler: pgBackRest full, diff and incr on the stack's cron.

    python -m infra.backup.scheduler --config C --stanza S --state-file F \\
        --full '0 1 * * 0' --diff '0 1 * * 1-6' --incr '0 */4 * * *'

The supervised stand-in for a host's systemd timers (infra/render/backup_timers.py),
started and stopped by the local backend (infra/backends/local_backup_scheduler.py).
Times are UTC. Started as root it becomes the service user (`postgres`) before
it does anything else, as the timers' services do: pgBackRest must run as the
database's OS user, and it reaches the primary on its Unix socket by peer
authentication, so no password exists for it to hold. On hosts that log in
with a password instead, `--passfile` names a 0600 libpq passfile.

On the dev stack it runs on the Docker host and pgBackRest runs in the primary
container: `--exec-prefix 'docker exec -u postgres pgp-dev-primary'` is put
before every pgbackrest command (`--config` is then the path in the container).
It then stays the user it was started as, since the Docker CLI needs that
user's access to the engine and the prefix switches to `postgres` itself.

It remembers in `--state-file` up to when it has looked, so a run missed while
it was stopped (a restart, `make up` replacing it, a long backup) happens once
when it is back, like a systemd timer's `Persistent=true`. A failed backup is
logged with pgBackRest's message and retried at the next scheduled run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import shlex
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.backup import schedule
from infra.errors import PlatformError
from infra.hostctl.daemon import stop_on_signals
from infra.hostctl.pgbackrest import PgBackRest
from infra.hostctl.proc import SERVICE_USER

logger = logging.getLogger("pg-platform.backup-scheduler")

STARTED = "backup scheduler started"
MAX_CATCH_UP = timedelta(days=35)  # a monthly full missed while stopped still runs
MAX_SLEEP = 30.0                   # look again at least this often (clock changes)


def become_service_user() -> None:
    """As root, drop to the service user for good (groups, gid, then uid)."""
    if os.geteuid() != 0:
        return
    ent = pwd.getpwnam(SERVICE_USER)
    os.setgroups([])
    os.setgid(ent.pw_gid)
    os.setuid(ent.pw_uid)
    os.environ["HOME"] = ent.pw_dir


def _load_last(state_file: Path, now: datetime) -> datetime:
    try:
        last = datetime.fromisoformat(json.loads(state_file.read_text())["looked_until"])
    except (OSError, ValueError, KeyError, TypeError):
        return now
    return max(last, now - MAX_CATCH_UP) if last <= now else now


def _save_last(state_file: Path, when: datetime) -> None:
    tmp = state_file.with_name(f".{state_file.name}.tmp")
    tmp.write_text(json.dumps({"looked_until": when.isoformat()}) + "\n")
    os.replace(tmp, state_file)


def run_due(pgbr: PgBackRest, jobs: dict[str, str], last: datetime, now: datetime) -> None:
    """Run the largest backup that fell due in (last, now], if any, and log how it went."""
    kind = schedule.due(jobs, last, now)
    if kind is None:
        return
    logger.info("%s backup of stanza %s: starting (due after %s)", kind, pgbr.stanza,
                last.strftime("%Y-%m-%d %H:%M:%S UTC"))
    started = datetime.now(UTC)
    try:
        pgbr.backup(kind, start_fast=True)
    except PlatformError as exc:
        logger.error("%s backup of stanza %s failed: %s", kind, pgbr.stanza, exc)
        return
    logger.info("%s backup of stanza %s: done in %.1fs", kind, pgbr.stanza,
                (datetime.now(UTC) - started).total_seconds())


def loop(pgbr: PgBackRest, jobs: dict[str, str], state_file: Path,
         stop: threading.Event) -> None:
    last = _load_last(state_file, datetime.now(UTC))
    logger.info("%s for stanza %s: %s; looking from %s%s", STARTED, pgbr.stanza,
                ", ".join(f"{k} {v!r}" for k, v in jobs.items() if v) or "nothing scheduled",
                last.strftime("%Y-%m-%d %H:%M:%S UTC"),
                f"; pgbackrest through {shlex.join(pgbr.exec_prefix)}" if pgbr.exec_prefix
                else "")
    while not stop.is_set():
        now = datetime.now(UTC)
        run_due(pgbr, jobs, last, now)
        last = now
        _save_last(state_file, last)
        stop.wait(min(schedule.seconds_to_next(jobs, datetime.now(UTC)) + 0.5, MAX_SLEEP))
    logger.info("backup scheduler for stanza %s stopped", pgbr.stanza)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infra.backup.scheduler",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="pgbackrest.conf")
    p.add_argument("--stanza", required=True)
    p.add_argument("--state-file", type=Path, required=True,
                   help="where the scheduler remembers up to when it looked")
    p.add_argument("--passfile", type=Path, help="a 0600 libpq passfile, where peer "
                   "authentication is not used")
    p.add_argument("--exec-prefix", default="", help="a command (shell words) that runs "
                   "pgbackrest elsewhere, e.g. 'docker exec -u postgres CONTAINER'")
    for kind in schedule.ORDER:
        p.add_argument(f"--{kind}", default="", help=f"cron expression of {kind} backups")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    jobs = {kind: getattr(args, kind) for kind in schedule.ORDER}
    prefix = tuple(shlex.split(args.exec_prefix))
    try:
        for kind, cron in jobs.items():
            if cron:
                schedule.check(cron, f"backup.schedule.{kind}")
        if prefix and args.passfile is not None:
            raise PlatformError("--passfile with --exec-prefix: the passfile would not "
                                "reach pgbackrest where the prefix runs it")
        if not prefix:
            become_service_user()
        if args.passfile is not None and args.passfile.stat().st_mode & 0o077:
            raise PlatformError(f"--passfile {args.passfile}: libpq ignores a passfile "
                                "readable by others; make it 0600")
    except (PlatformError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    stop = threading.Event()
    stop_on_signals(stop)
    loop(PgBackRest(config=args.config, stanza=args.stanza, passfile=args.passfile,
                    exec_prefix=prefix), jobs, args.state_file, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
