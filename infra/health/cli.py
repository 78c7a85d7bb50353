"""The command line: gather, judge, then print a table for people or JSON for tools.

Exit codes (infra/exitcodes.py): 0 healthy, 1 degraded, 2 unhealthy or when the
stack itself could not be read (no outputs, unknown stack).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.config import full_backup_max_age_seconds
from infra.errors import PlatformError
from infra.exitcodes import ERROR, OK
from infra.health import probes, stack
from infra.health.model import Pooler, Report
from infra.health.verdict import evaluate
from infra.ops.env import ROOT
from infra.ops.stack import StackRef
from infra.render import monitoring as rm
from infra.timescaledb import health as timescaledb_health

EXIT_UNREADABLE = ERROR


def gather(targets: stack.StackTargets, sql_dir: Path) -> Report:
    cfg = targets.cfg
    report = Report(stack=cfg.stack)
    # platform_monitor (pg_monitor and read grants only) where the stack has it.
    reader = targets.reader_dsn
    report.nodes = probes.probe_nodes(reader, targets.replica_reader_dsns)
    if targets.pooler_admin_dsn:
        report.pooler = probes.probe_pooler(targets.pooler_admin_dsn)
        if targets.pooler_dsn and cfg.replicas:
            report.pooler.read_only_error = probes.probe_read_only(targets.pooler_dsn,
                                                                   cfg.postgres.database)
    else:
        report.pooler = Pooler(error="the stack has no pooler_dsn output or console password")
    report.backups = probes.probe_backups(reader, targets.pgbackrest_config,
                                          cfg.backup.stanza, targets.pgbackrest_exec)
    report.schema = probes.probe_schema(reader, sql_dir, cfg.tenants, cfg.postgres.app_role)
    # The owner (not a superuser): TimescaleDB shows a job's error text (job_errors)
    # only to members of the job's owner or of the database owner.
    report.timescaledb = timescaledb_health.probe(targets.primary_dsn)
    full_max = full_backup_max_age_seconds(targets.monitoring, cfg.backup.schedule.full)
    sched = cfg.backup.schedule
    return evaluate(report, targets.monitoring, full_max,
                    schedule={"full": sched.full, "diff": sched.diff, "incr": sched.incr})


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _grid(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
             for r in (head, *rows)]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


def table(report: Report) -> str:
    """The report for people: one section per part, the verdict and reasons last."""
    out = [f"stack {report.stack}", "", "nodes"]
    out += _grid(("node", "state", "role", "version", "connections", "replication",
                  "lag bytes", "lag s"),
                 [(n.name, "up" if n.up else "DOWN", n.role or n.expected_role,
                   n.version or "-",
                   f"{n.connections}/{n.usable_connections}" if n.up else "-",
                   n.replication_state or "-", _fmt(n.lag_bytes), _fmt(n.lag_seconds))
                  for n in report.nodes])
    out += ["", "pooler"]
    pooler = report.pooler
    if pooler is None or not pooler.up:
        out.append(f"  DOWN: {pooler.error if pooler else 'not probed'}")
    else:
        out += _grid(("pool", "cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait"),
                     [(f"{p.database}/{p.user}", str(p.cl_active), str(p.cl_waiting),
                       str(p.sv_active), str(p.sv_idle), f"{p.maxwait_seconds:.1f}s")
                      for p in pooler.pools] or [("(no pools yet)", "", "", "", "", "")])
    b = report.backups
    out += ["", "backups"]
    for kind in ("full", "diff", "incr"):
        age = b.age_seconds.get(kind)
        when = "unknown" if not b.available else "none" if age is None else f"{_age(age)} ago"
        out.append(f"  last {kind}: {when}"
                   + (f" ({b.count.get(kind, 0)} in repository)" if b.available else "")
                   + (f"; {'LATE for' if b.late[kind] else 'covers'} the run of "
                      f"{b.expected_since[kind]}" if kind in b.late else ""))
    out.append(f"  WAL archiving: last {b.last_archived_wal or 'none'} "
               f"({_age(b.last_archived_age_seconds)} ago), "
               f"{_fmt(b.archive_failed_count)} failure(s)"
               + (", FAILING" if b.archive_failing else ""))
    s = report.schema
    out += ["", "schema"]
    if s.available:
        out.append(f"  pending migrations: {len(s.pending)}; active tenants: {_fmt(s.tenants)}")
        out += [f"    {p}" for p in s.pending]
    else:
        out.append(f"  unknown: {s.error}")
    out += timescaledb_health.table_lines(report.timescaledb)
    out += ["", f"status: {report.status.upper()}"]
    out += [f"  - {r}" for r in report.reasons]
    return "\n".join(out)


def scrape_config(ref: StackRef) -> str:
    """prometheus.yml for a local stack, with the alert rules from monitoring/."""
    cfg = ref.config()
    if cfg.backend != "local":
        raise PlatformError(f"stack {ref.name!r} uses backend {cfg.backend!r}; its exporters "
                            "listen on its hosts: see docs/monitoring.md for the targets")
    mon = cfg.monitoring
    return rm.prometheus_config(rm.local_targets(cfg), mon,
                                [str(rm.MONITORING / "alerts.yml")])


def alert_rules(ref: StackRef) -> str:
    cfg = ref.config()
    return rm.alert_rules(cfg, cfg.monitoring)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.health",
                                     description="Health of a pg-platform stack.")
    parser.add_argument("--stack", default="local", help="the stack to check (default local)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sql-dir", default=str(ROOT / "sql"),
                        help="the sql/ folder the stack deploys (for pending migrations)")
    parser.add_argument("--project-dir", default=str(ROOT), type=Path,
                        help="the Pulumi project holding Pulumi.<stack>.yaml")
    parser.add_argument("--pgbackrest-config", type=Path, default=None,
                        help="pgbackrest.conf to ask for backups (default: the local "
                             "stack's); on dev and prod hosts, the host's own")
    parser.add_argument("--scrape-config", action="store_true",
                        help="print a Prometheus config that scrapes this local stack's "
                             "exporters, and exit")
    parser.add_argument("--alert-rules", action="store_true",
                        help="print the Prometheus alert rules with this stack's thresholds, "
                             "and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log probe details")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ref = StackRef(args.stack, args.project_dir)
    try:
        if args.scrape_config:
            print(scrape_config(ref), end="")
            return OK
        if args.alert_rules:
            print(alert_rules(ref), end="")
            return OK
        targets = stack.load(ref)
        if args.pgbackrest_config is not None:
            # A config named here is this machine's (on a host): no exec prefix.
            targets = dataclasses.replace(targets, pgbackrest_config=args.pgbackrest_config,
                                          pgbackrest_exec=())
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    report = gather(targets, Path(args.sql_dir))
    if args.json:
        print(json.dumps({**report.to_dict(), "exit_code": report.exit_code}, indent=2,
                         default=str))
    else:
        print(table(report))
    return report.exit_code
