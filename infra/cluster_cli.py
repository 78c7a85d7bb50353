"""`python -m infra.cluster_cli {status,switchover,failover,restart,reinit,slots} --stack S`.

Becomes `python -m infra cluster ...` with the layout change. Wraps patronictl and
Patroni's REST API with the stack's own patroni.yml, so nobody types a DCS
address, a scope or a password. A switchover pauses PgBouncer around the role
change (infra/ops_cluster.py), so clients wait instead of failing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from infra import ops_cluster
from infra.backends import local_layout
from infra.config import PlatformConfig
from infra.errors import PlatformError


def _config_file(cfg: PlatformConfig) -> Path:
    from infra.backends.local_ha_layout import ha_layout, nodes

    if cfg.ha.manager != "patroni":
        raise PlatformError(f"stack {cfg.stack!r}: pg-platform:ha.manager={cfg.ha.manager!r}; "
                            "cluster commands need ha.manager: patroni")
    if cfg.backend != "local":
        raise PlatformError(f"stack {cfg.stack!r} uses backend {cfg.backend!r}: run "
                            "`patronictl -c /etc/patroni/patroni.yml` on one of its hosts")
    lay = ha_layout(cfg)
    for node in nodes(cfg):
        path = lay.config_file(node.name)
        if path.exists():
            return path
    raise PlatformError(f"stack {cfg.stack!r}: no patroni.yml under {lay.patroni_dir}; "
                        "run `make up` first")


def _routed(cfg: PlatformConfig) -> Callable[[str], bool]:
    """True once HAProxy sends read-write clients to `name` alone."""
    from infra.backends.local_ha_layout import ha_layout
    from infra.hostctl.haproxy import HaProxy

    d = ha_layout(cfg).haproxy_dir
    proxy = HaProxy(d / "haproxy.cfg", d / "stats.sock", cfg.postgres.listen_address,
                    cfg.ha.haproxy_port)
    return lambda name: proxy.servers_up("primary") == [name]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.cluster_cli",
                                 description="Operate a Patroni-managed pg-platform stack.")
    ap.add_argument("command", choices=("status", "switchover", "failover", "restart",
                                        "reinit", "slots"))
    ap.add_argument("--stack", default="local")
    ap.add_argument("--project-dir", type=Path, default=local_layout.ROOT)
    ap.add_argument("--candidate", help="switchover/failover: the member to promote")
    ap.add_argument("--member", help="restart/reinit: one member (restart: all when absent)")
    ap.add_argument("--if-managed", action="store_true",
                    help="status: print nothing and succeed when ha.manager is none")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from infra.backup.stack import stack_config, stack_outputs

    try:
        cfg = stack_config(args.stack, args.project_dir)
        if args.if_managed and cfg.ha.manager != "patroni":
            return 0
        path = _config_file(cfg)
        scope = f"pg-platform-{cfg.stack}"
        if args.command == "status":
            print(ops_cluster.format_status(ops_cluster.cluster_members(path)))
        elif args.command == "switchover":
            outs = stack_outputs(args.stack, args.project_dir)
            admin, primary = outs.get("pooler_admin_dsn"), outs.get("primary_dsn")
            if not isinstance(admin, str):
                raise PlatformError(f"stack {args.stack!r} has no pooler_admin_dsn output")
            r = ops_cluster.switchover(path, admin, cfg.postgres.database, _routed(cfg),
                                       candidate=args.candidate,
                                       checkpoint_dsn=primary if isinstance(primary, str)
                                       else None)
            print(f"switched over {r.old_leader} -> {r.new_leader}; "
                  f"writes paused {r.paused_seconds:.2f}s")
        elif args.command == "failover":
            if not args.candidate:
                raise PlatformError("failover needs --candidate MEMBER")
            print(ops_cluster.failover(path, args.candidate))
        elif args.command == "restart":
            print(ops_cluster.restart(path, scope, args.member))
        elif args.command == "reinit":
            if not args.member:
                raise PlatformError("reinit needs --member MEMBER")
            print(ops_cluster.reinit(path, scope, args.member))
        elif args.command == "slots":
            ms = ops_cluster.cluster_members(path)
            lead = ops_cluster.leader_of(ms)
            if lead is None:
                raise PlatformError("the cluster has no leader")
            outs = stack_outputs(args.stack, args.project_dir)
            made = ops_cluster.ensure_member_slots(str(outs["primary_dsn"]),
                                                   [m.name for m in ms], lead.name)
            print("recreated: " + (", ".join(made) if made else "nothing (all slots present)"))
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
