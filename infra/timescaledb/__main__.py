"""python -m infra.timescaledb {jobs,run-jobs} (--dsn-file FILE | --dsn-stdin)

`jobs` prints every TimescaleDB job's last status (exit 1 when one failed);
`run-jobs` is the supervised runner (see infra/timescaledb/jobs.py), in the
foreground until SIGTERM, or one pass with --once. The DSN is read from a
file (mode 0600) or one line of stdin (how the local stack starts the runner:
no file then holds the password), never from argv or the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import psycopg

from infra.hostctl.jobrunner import stop_on_signals
from infra.timescaledb import jobs


def _dsn(path: Path) -> str:
    try:
        mode = path.stat().st_mode & 0o077
        text = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"error: --dsn-file {path}: {exc.strerror}") from None
    if mode:
        raise SystemExit(f"error: --dsn-file {path} is readable by others "
                         f"(mode {oct(path.stat().st_mode & 0o777)}); chmod 600 it")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.timescaledb")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("jobs", "run-jobs"):
        p = sub.add_parser(name)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--dsn-file", type=Path,
                         help="a 0600 file holding the owner role's DSN to the primary")
        src.add_argument("--dsn-stdin", action="store_true",
                         help="read that DSN from the first line of stdin")
    run = sub.choices["run-jobs"]
    run.add_argument("--mode", choices=jobs.MODES, default="auto")
    run.add_argument("--interval", type=float, default=30.0, help="seconds between passes")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dsn = sys.stdin.readline().strip() if args.dsn_stdin else _dsn(args.dsn_file)
    if not dsn:
        raise SystemExit("error: no DSN given (empty --dsn-file or stdin)")
    if args.command == "jobs":
        with psycopg.connect(dsn, autocommit=True) as conn:
            statuses = jobs.job_statuses(conn)
        for st in statuses:
            print(f"{st.job_id}\t{st.name}\t{st.last_status or 'never run'}\t{st.runner}"
                  + (f"\t{st.error}" if st.error else ""))
        return 1 if any(st.failed for st in statuses) else 0
    if args.once:
        outcomes = jobs.tick(dsn, args.mode)
        return 1 if any(not o.succeeded for o in outcomes) else 0
    stop = threading.Event()
    stop_on_signals(stop)
    jobs.run_forever(dsn, args.mode, args.interval, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
