"""P5: replica replay lag under a saturating write load, platform vs a hand-made pair.

The same pgbench tpcb-like load (8 clients) runs on the platform's primary and
on a primary/replica pair made by hand with PostgreSQL's default settings
(initdb, pg_basebackup -R, nothing tuned). Every 0.5 s `pg_stat_replication`
is sampled on the primary: replay_lag (NULL, once caught up, counts as 0) and
the bytes not yet replayed. The platform's two replicas are pooled into one
set of samples. Usage::

    .venv/bin/python -m bench.replica_lag [--quick]
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psycopg

from bench import common, pgbench
from bench.common import Figure, Platform, Sizes
from infra import hostctl
from infra.hostctl import standby as standby_ctl
from tests.support import scratch_dir

CLIENTS = 8
INTERVAL = 0.5
_SAMPLE = ("SELECT COALESCE(EXTRACT(epoch FROM replay_lag) * 1000, 0)::float8, "
           "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 "
           "FROM pg_stat_replication WHERE state = 'streaming'")


@dataclass
class Samples:
    lag_ms: list[float] = field(default_factory=list)
    behind_bytes: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (f"p50 {common.percentile(self.lag_ms, 50):.1f} ms, "
                f"p99 {common.percentile(self.lag_ms, 99):.1f} ms, "
                f"max {max(self.lag_ms, default=0):.1f} ms, at most "
                f"{max(self.behind_bytes, default=0) / 1024:.0f} KiB behind, "
                f"{len(self.lag_ms)} samples")


def under_load(primary_dsn: str, seconds: int) -> tuple[Samples, pgbench.Run]:
    """Run the write load on the primary while a thread samples its replicas' lag."""
    samples = Samples()
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            while not stop.is_set():
                for lag, behind in conn.execute(_SAMPLE).fetchall():
                    samples.lag_ms.append(lag)
                    samples.behind_bytes.append(behind or 0.0)
                stop.wait(INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        load = pgbench.bench(primary_dsn, clients=CLIENTS, seconds=seconds,
                             shown_dsn=pgbench.where(primary_dsn))
    finally:
        stop.set()
        sampler.join()
    return samples, load


def wait_caught_up(primary_dsn: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(primary_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*), coalesce(max(pg_wal_lsn_diff("
                               "pg_current_wal_lsn(), replay_lsn)), 0) "
                               "FROM pg_stat_replication").fetchone()
            if row and row[0] > 0 and row[1] == 0:
                return
            time.sleep(0.2)
    raise RuntimeError("replicas did not catch up before the load")


@contextlib.contextmanager
def hand_made_pair() -> Iterator[str]:
    """initdb, a default postgresql.conf (only where to listen), pg_basebackup -R: a DSN."""
    base = scratch_dir("pgp-bench-pair-")
    user, password = "bench", secrets.token_urlsafe(18)
    port, rport = hostctl.free_port(), hostctl.free_port()
    primary = hostctl.Server(base / "primary", port)
    standby = hostctl.Server(base / "replica", rport)
    try:
        primary.initdb(user, password)
        run_dir = hostctl.make_dir(base / "run", 0o755)
        where = f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{run_dir}'\n"
        conf = primary.data_dir / "postgresql.conf"
        hostctl.write_file(conf, conf.read_text() + where + f"port = {port}\n")
        primary.start()
        passfile = base / "secrets" / "pgpass"
        standby_ctl.write_passfile(passfile, "*", port, user, password)
        hostctl.make_dir(standby.data_dir, 0o700)
        hostctl.run([str(hostctl.bin_dir() / "pg_basebackup"), "-D", str(standby.data_dir), "-R",
                     "-X", "stream", "-c", "fast", "-w",
                     "-d", f"host=127.0.0.1 port={port} user={user} passfile={passfile}"],
                    what="pg_basebackup of the hand-made pair")
        rconf = standby.data_dir / "postgresql.conf"
        hostctl.write_file(rconf, rconf.read_text() + f"port = {rport}\n")
        standby.start()
        yield primary.dsn(user, password)
    finally:
        standby.remove()
        primary.remove()
        shutil.rmtree(base, ignore_errors=True)


def measure(dsn: str, sizes: Sizes) -> tuple[Samples, pgbench.Run]:
    pgbench.initialise(dsn, sizes.pgbench_scale)
    wait_caught_up(dsn)
    return under_load(dsn, sizes.lag_seconds)


def run(sizes: Sizes, p: Platform) -> list[Figure]:
    with hand_made_pair() as pair_dsn:
        pair, pair_load = measure(pair_dsn, sizes)
    ours, load = measure(p.outputs["primary_dsn"], sizes)
    ours_p99 = common.percentile(ours.lag_ms, 99)
    pair_p99 = common.percentile(pair.lag_ms, 99)
    ratio = ours_p99 / pair_p99 if pair_p99 else float("inf")
    return [common.report(Figure(
        "P5", f"replay lag p99 under pgbench -c {CLIENTS} writes for {sizes.lag_seconds} s, "
              "sampled every 0.5 s",
        f"{ours_p99:.1f} ms ({load.tps:.0f} tps)",
        f"{pair_p99:.1f} ms ({pair_load.tps:.0f} tps, hand-made pair)", common.x(ratio),
        "≤ 1.5× and ≤ 50 ms", ratio <= 1.5 and ours_p99 <= 50,
        (load.command, pair_load.command),
        note=f"platform (2 replicas): {ours.summary()}; pair: {pair.summary()}"))]


def main(argv: Sequence[str] | None = None) -> int:
    return common.platform_main(run, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
