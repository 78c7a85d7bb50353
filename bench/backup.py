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
rendered defaults, as evidence for tuning them. Usage::

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
from infra import config, pgctl, replica
from infra.backends import local
from infra.backends.local_backup import BackupProvider
from infra.backends.local_layout import layout
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backup import restore
from infra.backup.pgbackrest import PgBackRest, full_backups
from infra.schema import engine
from infra.schema.tenants import TenantSpec
from tests.support import scratch_dir

TUNED = ("--process-max=2", "--repo1-bundle")
MB_PER_SCALE = 15  # pgbench tables and indexes, per unit of scale


@dataclass(frozen=True)
class Tuned(PgBackRest):
    """pgbackrest with options on top of pgbackrest.conf (for variants only)."""

    extra: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    def run(self, command: str, *options: str, timeout: float = 600.0) -> str:
        started = time.perf_counter()
        try:
            return super().run(command, *options, *self.extra, timeout=timeout)
        finally:
            self.seconds[command] = time.perf_counter() - started


def tuned(pgbr: PgBackRest, *extra: str) -> Tuned:
    return Tuned(**{f.name: getattr(pgbr, f.name) for f in fields(pgbr)}, extra=extra)


@dataclass(frozen=True)
class Primary:
    cfg: config.PlatformConfig
    base: Path
    server: pgctl.Server
    pgbr: PgBackRest
    passwords: dict[str, str]

    def dsn(self, port: int | None = None) -> str:
        pg = self.cfg.postgres
        return pgctl.Server(Path("/"), port or pg.port).dsn(
            pg.owner_role, self.passwords["owner"], pg.database)


@contextlib.contextmanager
def platform_primary() -> Iterator[Primary]:
    base = scratch_dir("pgp-bench-backup-")
    port = pgctl.free_port()
    cfg = config.load({"state_dir": str(base), "postgres": {"port": port}}, "bench")
    pw = {k: secrets.token_urlsafe(18) for k in ("owner", "app", "replication")}
    server = pgctl.Server(Path(layout(cfg).primary_paths().data_dir), port)
    backup_props = local.backup_props(cfg, pw["owner"])
    try:
        PostgresServerProvider().create(local.primary_props(cfg, pw["owner"]))
        DatabaseProvider().create(local.database_props(cfg, pw["owner"], pw["app"],
                                                       pw["replication"]))
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
    replica.write_passfile(passfile, "*", pg.port, pg.replication_role,
                           p.passwords["replication"])
    target = p.base / "basebackup"
    argv = [str(pgctl.bin_dir() / "pg_basebackup"), "-D", str(target), "-X", "stream",
            "-c", "fast", "-w",
            "-d", f"host=127.0.0.1 port={pg.port} user={pg.replication_role} "
                  f"passfile={passfile}"]
    t, _ = common.timed(lambda: common.run(argv, as_service=True))
    shutil.rmtree(target, ignore_errors=True)
    return t, common.shown(["pg_basebackup", *argv[1:]])


def pgbr_backup(pgbr: PgBackRest, plain: PgBackRest) -> tuple[float, str, str]:
    """Seconds, the printed command and the new backup's label (`plain` reads info)."""
    t, _ = common.timed(lambda: pgbr.backup("full", start_fast=True))
    extra = pgbr.extra if isinstance(pgbr, Tuned) else ()
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


def pitr(p: Primary, pgbr: Tuned, target: str) -> float:
    """Restore to `target`, replay, promote and connect; check the target was honoured."""
    workdir = restore.new_workdir(p.base / "restores")

    def to_ready() -> restore.Restored:
        copy = restore.restore(pgbr, workdir, target=target)
        restore.wait_promoted(copy, p.dsn(copy.server.port))
        return copy

    t, copy = common.timed(to_ready)
    try:
        with psycopg.connect(p.dsn(copy.server.port)) as conn:
            rows = conn.execute("SELECT n FROM bench_pitr ORDER BY n").fetchall()
        if rows != [(1,)]:
            raise RuntimeError(f"PITR to {target} gave rows {rows}, expected [(1,)]")
    finally:
        copy.remove()
    return t


def copy_stopped(p: Primary) -> float:
    p.server.stop()
    target = p.base / "copy"
    t, _ = common.timed(lambda: common.run(["cp", "-a", str(p.server.data_dir), str(target)]))
    shutil.rmtree(target, ignore_errors=True)
    return t


def run(sizes: Sizes) -> list[Figure]:
    with platform_primary() as p:
        mb = fill(p, sizes)
        what = f"{mb:.0f} MB database incl. {sizes.backup_tenants} tenant schemas"
        t_bb, bb_cmd = basebackup(p)
        t_tuned, tuned_cmd, tuned_label = pgbr_backup(tuned(p.pgbr, *TUNED), p.pgbr)
        t_ours, ours_cmd, _ = pgbr_backup(p.pgbr, p.pgbr)  # last, so a plain restore picks it
        target = mark_target(p)
        t_cp = copy_stopped(p)
        cp_cmd = "cp -a DATA_DIR COPY  # the stopped primary's data directory"
        plain = tuned(p.pgbr)
        t_pitr = pitr(p, plain, target)
        fast = tuned(p.pgbr, "--process-max=2", f"--set={tuned_label}")
        t_pitr_tuned = pitr(p, fast, target)
    restore_cmd = ("python -m infra.backup restore --target TIME  # restore.restore + "
                   "wait_promoted: pgbackrest restore --type=time --target-action=promote, "
                   "start, replay, promote, connect")
    speed = mb / t_ours
    return [
        common.report(Figure(
            "P6a", f"pgBackRest full backup (rendered pgbackrest.conf) of a {what}",
            f"{common.secs(t_ours)} ({speed:.0f} MB/s)",
            f"{common.secs(t_bb)} ({mb / t_bb:.0f} MB/s, pg_basebackup)",
            common.x(t_bb / t_ours), "≥ 0.8× the speed", t_bb / t_ours >= 0.8,
            (ours_cmd, bb_cmd))),
        common.report(Figure(
            "P6a (tuning)", f"pgBackRest full backup with {' '.join(TUNED)}",
            f"{common.secs(t_tuned)} ({mb / t_tuned:.0f} MB/s)",
            f"{common.secs(t_bb)} (pg_basebackup)", common.x(t_bb / t_tuned),
            "≥ 0.8× the speed", None, (tuned_cmd, bb_cmd))),
        common.report(Figure(
            "P6b", f"PITR to ready (rendered pgbackrest.conf), {what}",
            common.secs(t_pitr), f"{common.secs(t_cp)} (cp -a of the stopped data dir)",
            common.x(t_pitr / t_cp), "≤ 1.0×", t_pitr / t_cp <= 1.0, (restore_cmd, cp_cmd),
            note=f"of which pgbackrest restore {plain.seconds['restore']:.2f} s; the rest is "
                 "start, WAL replay to the target, promote and the first connection")),
        common.report(Figure(
            "P6b (tuning)", "PITR to ready from the tuned backup, restore --process-max=2",
            common.secs(t_pitr_tuned), f"{common.secs(t_cp)} (cp -a)",
            common.x(t_pitr_tuned / t_cp), "≤ 1.0×", None, (restore_cmd, cp_cmd),
            note=f"of which pgbackrest restore {fast.seconds['restore']:.2f} s")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    args = ap.parse_args(argv)
    run(Sizes.quick() if args.quick else Sizes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
