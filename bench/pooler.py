"""P4: pgbench select-only with 1,000 clients through PgBouncer vs direct at its best count.

Direct: the app role straight to the platform's primary, at a few client
counts; the best tps is the baseline. Pooled: 1,000 clients through the
platform's PgBouncer as `pulumi up` rendered it. Then the same 1,000 clients
through PgBouncers rendered with other settings (pool size, a Unix socket to
the server) against the same primary: evidence for tuning the defaults. Usage::

    .venv/bin/python -m bench.pooler [--quick]
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from bench import common, pgbench
from bench.common import TENANTS, Figure, Platform, Sizes
from infra import config, hostctl, render
from infra.backends.local_layout import layout, replicas
from infra.hostctl.pgbouncer import PgBouncer
from tests.support import scratch_dir

CLIENTS = 1000
DIRECT_CLIENTS = (4, 8, 16, 32)
CONNECTING = 10  # seconds added to a 1,000-client run for its connections


@dataclass(frozen=True)
class Variant:
    name: str
    pool_size: int
    unix_socket: bool
    processes: int = 1  # more than one: PgBouncers sharing the port (so_reuseport)


VARIANTS = (Variant("TCP to the server, pool 8", 8, False),
            Variant("Unix socket to the server, pool 20", 20, True),
            Variant("Unix socket to the server, pool 8", 8, True),
            Variant("2 processes (so_reuseport), Unix socket, pool 8 each", 8, True, 2))


def stack_config(p: Platform, **pooler: object) -> config.PlatformConfig:
    return config.load({"state_dir": str(p.stack.state_dir), "replicas": 2,
                        "postgres": {"port": p.port}, "tenants": TENANTS,
                        "pooler": pooler}, "bench")


def start_variant(p: Platform, v: Variant, work: Path) -> list[PgBouncer]:
    """PgBouncers rendered by the platform's renderer with `v`'s settings, on one port."""
    port = hostctl.free_port()
    cfg = stack_config(p, port=port, default_pool_size=v.pool_size)
    lay = layout(cfg)
    reps = replicas(cfg)
    targets = render.PoolerTargets(
        listen_address="127.0.0.1",
        primary_host=lay.primary_paths().socket_dir if v.unix_socket else "127.0.0.1",
        primary_port=p.port, replica_hosts=tuple(r.host for r in reps),
        replica_port=reps[0].port)
    bouncers = []
    for i in range(v.processes):
        paths = render.PoolerPaths(auth_file=lay.pooler_paths.auth_file,
                                   socket_dir=str(hostctl.make_dir(work / f"run{i}", 0o755)),
                                   pid_file=str(work / f"pgbouncer{i}.pid"),
                                   log_file=str(work / f"pgbouncer{i}.log"))
        text = render.pgbouncer_ini(cfg, paths, targets, lay.tls)
        if v.processes > 1:  # [pgbouncer] is the template's last section
            text += "so_reuseport = 1\n"
        ini = work / f"pgbouncer{i}.ini"
        hostctl.write_file(ini, text)
        bouncer = PgBouncer(ini_path=ini, pid_file=Path(paths.pid_file or ""),
                            host="127.0.0.1", port=port, log_file=Path(paths.log_file or ""))
        bouncer.start()
        bouncers.append(bouncer)
    return bouncers


def _with_port(dsn: str, port: int) -> str:
    return make_conninfo(dsn, port=str(port))


def run(sizes: Sizes, p: Platform, variants: Sequence[Variant] = VARIANTS) -> list[Figure]:
    out = p.outputs
    pgbench.initialise(out["primary_dsn"], sizes.pgbench_scale)
    pgbench.grant_select(out["primary_dsn"], "app")
    secs = sizes.pgbench_seconds
    counts = DIRECT_CLIENTS if sizes.pgbench_seconds >= 10 else (8, 16)
    direct = [pgbench.bench(out["app_dsn"], "-S", clients=c, seconds=secs,
                            shown_dsn="direct " + pgbench.where(out["app_dsn"]))
              for c in counts]
    best = max(direct, key=lambda r: r.tps)
    sweep = ", ".join(f"{r.clients}: {r.tps:.0f}" for r in direct)
    # pgbench's -T includes connecting 1,000 SCRAM clients; its tps leaves that out.
    pooled = pgbench.bench(out["pooler_dsn"], "-S", clients=CLIENTS, seconds=secs + CONNECTING,
                           shown_dsn="PgBouncer " + pgbench.where(out["pooler_dsn"]))
    figs = [_figure("as rendered: TCP to the server, pool 20", pooled, best, sweep)]
    for v in variants:
        work = scratch_dir("pgp-bench-pooler-")
        hostctl.chown_service(work)
        bouncers = start_variant(p, v, work)
        port = bouncers[0].port
        try:
            r = pgbench.bench(_with_port(out["pooler_dsn"], port), "-S",
                              clients=CLIENTS, seconds=secs + CONNECTING,
                              shown_dsn=f"PgBouncer variant ({v.name}) on port {port}")
        finally:
            for b in bouncers:
                b.stop()
            shutil.rmtree(work, ignore_errors=True)
        figs.append(_figure(f"variant: {v.name}", r, best, sweep, context=True))
    return figs


def _figure(label: str, r: pgbench.Run, best: pgbench.Run, sweep: str,
            context: bool = False) -> Figure:
    ratio = r.tps / best.tps
    ok = ratio >= 0.6 and r.failed_connects == 0 and r.exit_code == 0
    return common.report(Figure(
        "P4" + (" (tuning)" if context else ""),
        f"pgbench -S, {r.clients} clients through PgBouncer ({label})",
        f"{r.tps:.0f} tps, {r.failed_connects} failed connects",
        f"{best.tps:.0f} tps direct at {best.clients} clients", common.x(ratio),
        "≥ 0.6×, 0 failed connects", None if context else ok,
        (r.command, best.command),
        note=f"direct tps by clients: {sweep}" + (f"; {r.first_error}" if r.first_error else "")))


def main(argv: Sequence[str] | None = None) -> int:
    return common.platform_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
