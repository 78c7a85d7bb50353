"""`python -m infra cluster {status,switchover,failover,restart,reinit,slots} --stack S`.

Wraps patronictl and Patroni's REST API with the stack's own patroni.yml, so
nobody types a DCS address, a scope or a password. A switchover pauses
PgBouncer around the role change (infra/ops/cluster.py), so clients wait
instead of failing. Exit codes follow infra/exitcodes.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from psycopg.conninfo import make_conninfo

from infra.backends import registry
from infra.backends.base import LocalFiles
from infra.config import PlatformConfig
from infra.errors import PlatformError
from infra.exitcodes import ERROR, OK
from infra.hostctl.haproxy import HaProxy
from infra.ops import cluster
from infra.ops.env import ROOT
from infra.ops.stack import StackRef


def _files(cfg: PlatformConfig) -> LocalFiles:
    if cfg.ha.manager != "patroni":
        raise PlatformError(f"stack {cfg.stack!r}: pg-platform:ha.manager={cfg.ha.manager!r}; "
                            "cluster commands need ha.manager: patroni")
    files = registry.get(cfg.backend).local_files(cfg)
    if files is None or not files.patroni_configs:
        raise PlatformError(f"stack {cfg.stack!r} runs on backend {cfg.backend!r}: run "
                            "`patronictl -c /etc/patroni/patroni.yml` on one of its hosts")
    return files


def _config_file(files: LocalFiles) -> Path:
    for path in files.patroni_configs:
        if path.exists():
            return path
    raise PlatformError(f"no patroni.yml at {', '.join(map(str, files.patroni_configs))}; "
                        "run `make up` first")


def _routed(cfg: PlatformConfig, files: LocalFiles) -> Callable[[str], bool]:
    """True once HAProxy sends read-write clients to `name` alone."""
    sock = files.haproxy_socket or Path("/nonexistent")
    proxy = HaProxy(sock.with_name("haproxy.cfg"), sock, cfg.postgres.listen_address,
                    cfg.ha.haproxy_port)
    return lambda name: proxy.servers_up("primary") == [name]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m infra cluster",
                                 description="Operate a Patroni-managed pg-platform stack.")
    ap.add_argument("command", choices=("status", "switchover", "failover", "restart",
                                        "reinit", "slots"))
    ap.add_argument("--stack", default="local")
    ap.add_argument("--project-dir", type=Path, default=ROOT)
    ap.add_argument("--candidate", help="switchover/failover: the member to promote")
    ap.add_argument("--member", help="restart/reinit: one member (restart: all when absent)")
    ap.add_argument("--if-managed", action="store_true",
                    help="status: print nothing and succeed when ha.manager is none")
    return ap


def _node_dsn(superuser_dsn: str, cfg: PlatformConfig) -> Callable[[cluster.Member], str]:
    """Break-glass on one member: the stack's superuser_dsn (HAProxy's read-write port)
    pointed at the member's own address and PostgreSQL port."""
    def dsn(member: cluster.Member) -> str:
        host = member.host.rpartition(":")[0] if member.host.count(":") == 1 else member.host
        return make_conninfo(superuser_dsn, host=host, port=cfg.postgres.port)
    return dsn


def run(args: argparse.Namespace) -> str:
    ref = StackRef(args.stack, args.project_dir)
    cfg = ref.config()
    if args.if_managed and cfg.ha.manager != "patroni":
        return ""
    files = _files(cfg)
    path = _config_file(files)
    scope = f"pg-platform-{cfg.stack}"
    if args.command == "status":
        return cluster.format_status(cluster.cluster_members(path))
    if args.command == "failover":
        if not args.candidate:
            raise PlatformError("failover needs --candidate MEMBER")
        return cluster.failover(path, args.candidate)
    if args.command == "restart":
        return cluster.restart(path, scope, args.member)
    if args.command == "reinit":
        if not args.member:
            raise PlatformError("reinit needs --member MEMBER")
        return cluster.reinit(path, scope, args.member)
    outs = ref.outputs()
    # CHECKPOINT and creating a physical slot need the break-glass superuser (the owner
    # role is not one); it reaches the leader through HAProxy's read-write port.
    primary = outs.get("superuser_dsn")
    if args.command == "slots":
        ms = cluster.cluster_members(path)
        lead = cluster.leader_of(ms)
        if lead is None or not isinstance(primary, str):
            raise PlatformError("the cluster has no leader, or the stack no superuser_dsn")
        made = cluster.ensure_member_slots(primary, [m.name for m in ms], lead.name)
        return "recreated: " + (", ".join(made) if made else "nothing (all slots present)")
    admin = outs.get("pooler_admin_dsn")
    if not isinstance(admin, str):
        raise PlatformError(f"stack {args.stack!r} has no pooler_admin_dsn output")
    r = cluster.switchover(path, admin, cfg.postgres.database, _routed(cfg, files),
                           candidate=args.candidate,
                           node_dsn=_node_dsn(primary, cfg) if isinstance(primary, str) else None)
    return (f"switched over {r.old_leader} -> {r.new_leader}; "
            f"writes paused {r.paused_seconds:.2f}s")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        text = run(args)
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ERROR
    if text:
        print(text)
    return OK
