"""P6a/P6b: pgBackRest full backup vs pg_basebackup, and PITR to ready vs `cp -a`.

A primary is made by the local backend's own providers (rendered
postgresql.conf with WAL archiving, the platform database and roles, the
pgBackRest stanza with its first full backup), then filled with pgbench tables
generated server-side and `backup_tenants` tenant schemas from sql/.

P6a times `pg_basebackup` (plain, WAL streamed) and then a full backup with the
rendered pgbackrest.conf. P6b writes a marker, takes a target time, writes
more, and times the platform's PITR (infra.backup.restore: restore to the
target, replay, promote, accept a connection) against `cp -a` of the stopped
data directory. Both are also run with pgBackRest options that are not the
rendered defaults (the defaults before tuning), as evidence for the change. Usage::

    .venv/bin/python -m bench.backup [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import psycopg

from bench import common, pgbench
from bench.common import Figure, Sizes
from infra import config, hostctl
from infra.backends import local
from infra.backends.local_backup import BackupProvider
from infra.backends.local_layout import layout
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backup import restore
from infra.hostctl import standby
from infra.hostctl.pgbackrest import PgBackRest, full_backups
from infra.schema import engine
from infra.schema.tenants import TenantSpec
from tests.support import scratch_dir, write_tls

# The defaults before bench/ tuned them (one process, no bundling), for comparison.
BEFORE = ("--process-max=1", "--no-repo1-bundle")
MB_PER_SCALE = 15  # pgbench tables and indexes, per unit of scale


@dataclass(frozen=True)
class WithOptions(PgBackRest):
    """pgbackrest with options on top of pgbackrest.conf (for variants only)."""

    extra: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def run(self, command: str, *options: str, timeout: float = 600.0) -> str:
        started = time.perf_counter()
        try:
            return super().run(command, *options, *self.extra, timeout=timeout)
        finally:
            self.seconds[command] = time.perf_counter() - started


def with_options(pgbr: PgBackRest, *extra: str) -> WithOptions:
    return WithOptions(**{f.name: getattr(pgbr, f.name) for f in fields(pgbr)}, extra=extra)


@dataclass(frozen=True)
class Primary:
    cfg: config.PlatformConfig
    base: Path
    server: hostctl.Server
    pgbr: PgBackRest
    passwords: dict[str, str]

    def dsn(self) -> str:
        pg = self.cfg.postgres
        return hostctl.Server(Path("/"), pg.port).dsn(
            pg.owner_role, self.passwords["owner"], pg.database)


@contextlib.contextmanager
def platform_primary() -> Iterator[Primary]:
    base = scratch_dir("pgp-bench-backup-")
    port = hostctl.free_port()
    cfg = config.load({"state_dir": str(base), "postgres": {"port": port}}, "bench")
    pw = {k: secrets.token_urlsafe(18) for k in ("superuser", "owner", "app", "replication")}
    server = hostctl.Server(Path(layout(cfg).primary_paths().data_dir), port)
    backup_props = local.backup_props(cfg)
    try:
        tls = write_tls(Path(layout(cfg).tls.ca_file).parent)  # pg_hba: hostssl only
        PostgresServerProvider().create(local.primary_props(cfg, pw["superuser"], tls))
        DatabaseProvider().create(local.database_props(cfg, pw["superuser"], pw["app"],
                                                       pw["replication"], owner_pw=pw["owner"]))
        BackupProvider().create(backup_props)
        pgbr = PgBackRest(config=Path(backup_props["config_path"]), stanza=cfg.backup.stanza,
                          password=pw["owner"])
        yield Primary(cfg, base, server, pgbr, pw)
    finally:
        server.remove()
        shutil.rmtree(base, ignore_errors=True)


def fill(p: Primary, sizes: Sizes) -> float:
    """pgbench tables of about `backup_mb` and the tenant schemas; returns the size in MB."""
    scale = max(1, sizes.backup_mb // MB_PER_SCALE)
    pgbench.initialise(p.dsn(), scale)
    tenants = tuple(TenantSpec(f"t{i:05d}", f"Tenant {i}") for i in range(sizes.backup_tenants))
    engine.apply(p.dsn(), engine.Options(sql_dir=common.ROOT / "sql", tenants=tenants))
    with psycopg.connect(p.dsn(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()
    return float(row[0]) / 2**20 if row else 0.0


def basebackup(p: Primary) -> tuple[float, str]:
    pg = p.cfg.postgres
    passfile = p.base / "secrets" / "replicator.pgpass"
    standby.write_passfile(passfile, "*", pg.port, pg.replication_role,
                           p.passwords["replication"])
    target = p.base / "basebackup"
    argv = [str(hostctl.bin_dir() / "pg_basebackup"), "-D", str(target), "-X", "stream",
            "-c", "fast", "-w",
            "-d", f"host=127.0.0.1 port={pg.port} user={pg.replication_role} "
                  f"passfile={passfile}"]
    t, _ = common.timed(lambda: common.run(argv, as_service=True))
    shutil.rmtree(target, ignore_errors=True)
    return t, common.shown(["pg_basebackup", *argv[1:]])


def pgbr_backup(pgbr: PgBackRest, plain: PgBackRest) -> tuple[float, str, str]:
    """Seconds, the printed command and the new backup's label (`plain` reads info)."""
    t, _ = common.timed(lambda: pgbr.backup("full", start_fast=True))
    extra = pgbr.extra if isinstance(pgbr, WithOptions) else ()
    cmd = common.shown(["pgbackrest", f"--config={pgbr.config}", f"--stanza={pgbr.stanza}",
                        "--type=full", "--start-fast", *extra, "backup"])
    return t, cmd, str(full_backups(plain.info())[-1]["label"])


def mark_target(p: Primary) -> str:
    """One row before the target time, one after; the WAL of both archived."""
    with psycopg.connect(p.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_pitr (n int)")
        conn.execute("INSERT INTO bench_pitr VALUES (1)")
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        conn.execute("SELECT pg_sleep(0.2)")
        conn.execute("INSERT INTO bench_pitr VALUES (2)")
    p.pgbr.check()
    assert row is not None
    return restore.format_target(row[0])


def pitr(p: Primary, pgbr: WithOptions, target: str) -> float:
    """Restore to `target`, replay, promote and connect; check the target was honoured."""
    workdir = restore.new_workdir(p.base / "restores")

    def to_ready() -> restore.Restored:
        copy = restore.restore(pgbr, workdir, target=target)
        restore.wait_promoted(copy, copy.local_dsn(p.dsn()))
        return copy

    t, copy = common.timed(to_ready)
    try:
        with psycopg.connect(copy.local_dsn(p.dsn())) as conn:
            rows = conn.execute("SELECT n FROM bench_pitr ORDER BY n").fetchall()
        if rows != [(1,)]:
            raise RuntimeError(f"PITR to {target} gave rows {rows}, expected [(1,)]")
    finally:
        copy.remove()
    return t


def copy_stopped(p: Primary) -> tuple[float, float]:
    """`cp -a` of the stopped data directory; also with `sync` after it, for context."""
    p.server.stop()
    target = p.base / "copy"
    t, _ = common.timed(lambda: common.run(["cp", "-a", str(p.server.data_dir), str(target)]))
    shutil.rmtree(target, ignore_errors=True)
    common.run(["sync"])
    t_sync, _ = common.timed(lambda: common.run(
        ["sh", "-c", 'cp -a "$0" "$1" && sync', str(p.server.data_dir), str(target)]))
    shutil.rmtree(target, ignore_errors=True)
    return t, t_sync


def run(sizes: Sizes) -> list[Figure]:
    with platform_primary() as p:
        mb = fill(p, sizes)
        what = f"{mb:.0f} MB database incl. {sizes.backup_tenants} tenant schemas"
        t_bb, bb_cmd = basebackup(p)
        t_before, before_cmd, before_label = pgbr_backup(with_options(p.pgbr, *BEFORE), p.pgbr)
        t_ours, ours_cmd, _ = pgbr_backup(p.pgbr, p.pgbr)  # last, so a plain restore picks it
        target = mark_target(p)
        t_cp, t_cp_sync = copy_stopped(p)
        cp_cmd = "cp -a DATA_DIR COPY  # the stopped primary's data directory"
        plain = with_options(p.pgbr)
        t_pitr = pitr(p, plain, target)
        slow = with_options(p.pgbr, "--process-max=1", f"--set={before_label}")
        t_pitr_before = pitr(p, slow, target)
    restore_cmd = ("python -m infra.backup restore --config CONF --dsn DSN --target TIME  "
                   "# pgbackrest restore --type=time --target-action=promote, start, replay, "
                   "promote, first connection")
    speed = mb / t_ours
    return [
        common.report(Figure(
            "P6a", f"pgBackRest full backup (rendered pgbackrest.conf) of a {what}",
            f"{common.secs(t_ours)} ({speed:.0f} MB/s)",
            f"{common.secs(t_bb)} ({mb / t_bb:.0f} MB/s, pg_basebackup)",
            common.x(t_bb / t_ours), "≥ 0.8× the speed", t_bb / t_ours >= 0.8,
            (ours_cmd, bb_cmd))),
        common.report(Figure(
            "P6a (tuning)", f"pgBackRest full backup as before tuning: {' '.join(BEFORE)}",
            f"{common.secs(t_before)} ({mb / t_before:.0f} MB/s)",
            f"{common.secs(t_bb)} (pg_basebackup)", common.x(t_bb / t_before),
            "≥ 0.8× the speed", None, (before_cmd, bb_cmd))),
        common.report(Figure(
            "P6b", f"PITR to ready (rendered pgbackrest.conf), {what}",
            common.secs(t_pitr), f"{common.secs(t_cp)} (cp -a of the stopped data dir)",
            common.x(t_pitr / t_cp), "≤ 1.0×", t_pitr / t_cp <= 1.0, (restore_cmd, cp_cmd),
            note=f"of which pgbackrest restore {plain.seconds['restore']:.2f} s; the rest is "
                 "start, WAL replay to the target, promote and the first connection. "
                 f"`cp -a` then `sync` (durable, as pgBackRest's restore is): "
                 f"{t_cp_sync:.2f} s")),
        common.report(Figure(
            "P6b (tuning)", "PITR to ready as before tuning: from that backup, --process-max=1",
            common.secs(t_pitr_before), f"{common.secs(t_cp)} (cp -a)",
            common.x(t_pitr_before / t_cp), "≤ 1.0×", None, (restore_cmd, cp_cmd),
            note=f"of which pgbackrest restore {slow.seconds['restore']:.2f} s")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    args = ap.parse_args(argv)
    run(Sizes.quick() if args.quick else Sizes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
