"""pgBackRest set up by the local backend's provider; restore and the drill, for real."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from infra import hostctl
from infra.backends.local_layout import layout
from infra.backup import restore
from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.pgbackrest import PgBackRest, full_backups
from tests.integration.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]


def pgbr(cluster: Cluster) -> PgBackRest:
    lay = layout(cluster.cfg)
    return PgBackRest(config=lay.pgbackrest_conf, stanza=cluster.cfg.backup.stanza,
                      password=cluster.passwords["owner"])


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    lay = layout(cluster.cfg)
    return subprocess.run(
        [sys.executable, "-m", "infra.backup", *args, "--config", str(lay.pgbackrest_conf),
         "--stanza", cluster.cfg.backup.stanza, "--dsn", cluster.owner_dsn(),
         "--restores-dir", str(lay.restores)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_the_stanza_has_a_full_backup_and_check_passes(cluster: Cluster) -> None:
    info = pgbr(cluster).info()
    assert info["status"]["code"] == 0, info["status"]
    fulls = full_backups(info)
    assert fulls and fulls[0]["label"] == cluster.outs["backup"]["first_backup"]
    pgbr(cluster).check()  # raises with pgBackRest's message when archiving is broken


def _hold_archive_lock(cluster: Cluster) -> int:
    """Take the stanza's archive lock the way a running archive-push holds it (flock)."""
    lay = layout(cluster.cfg)
    lock = Path(lay.backup_paths.lock_path) / f"{cluster.cfg.backup.stanza}-archive.lock"
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o640)
    hostctl.chown_service(lock)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_stanza_create_waits_for_an_archive_push_holding_the_lock(cluster: Cluster) -> None:
    """A cold `up` of a Patroni stack met this: the Backup resource's stanza-create while
    pg-1 archived failed with `unable to acquire lock on file ...-archive.lock`."""
    fd = _hold_archive_lock(cluster)
    released = threading.Event()

    def release() -> None:
        released.set()
        os.close(fd)  # closing the descriptor drops the flock

    timer = threading.Timer(1.5, release)
    timer.start()
    try:
        pgbr(cluster).stanza_create()
    finally:
        timer.cancel()
    assert released.is_set()  # it returned only after the lock was free
    # A lock that stays taken is still an error, with pgBackRest's own message.
    fd = _hold_archive_lock(cluster)
    try:
        with pytest.raises(ProcessError, match=r"\[050\]: unable to acquire lock"):
            pgbr(cluster).stanza_create(lock_wait=1.0)
    finally:
        os.close(fd)


def test_retention_and_schedule_are_rendered_for_the_host(cluster: Cluster) -> None:
    lay = layout(cluster.cfg)
    conf = lay.pgbackrest_conf.read_text()
    assert "repo1-retention-full=2\n" in conf and f"pg1-port={cluster.cfg.postgres.port}" in conf
    jobs = [line.split() for line in lay.backup_schedule.read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert [job[5] for job in jobs] == ["postgres"] * 3
    assert [job[-2] for job in jobs] == ["--type=full", "--type=diff", "--type=incr"]
    assert all(job[-1] == "backup" for job in jobs)


def test_drill_restores_exactly_the_rows_committed_up_to_t(cluster: Cluster) -> None:
    proc = cli(cluster, "drill", "--rows", "15")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    before = re.search(r"rows committed <= T: (\d+), present after restore: (\d+), lost: (\d+)",
                       out)
    after = re.search(r"rows committed >  T: (\d+), present after restore: (\d+) \(extra\)", out)
    assert before and after, out
    assert int(before.group(1)) == int(before.group(2)) == 15 and before.group(3) == "0"
    assert int(after.group(1)) == 15 and after.group(2) == "0"
    assert not any(layout(cluster.cfg).restores.iterdir())  # the copy was removed
    assert cluster.passwords["owner"] not in out + proc.stderr


def test_restore_command_prints_where_the_copy_runs_but_no_password(cluster: Cluster) -> None:
    proc = cli(cluster, "restore")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cluster.passwords["owner"] not in proc.stdout + proc.stderr
    m = re.search(r"into (\S+/data)\n", proc.stdout)
    assert m, proc.stdout
    data_dir = Path(m.group(1))
    copy = restore.Restored(server=hostctl.Server(data_dir, int(re.search(
        r"running on 127\.0\.0\.1:(\d+)", proc.stdout).group(1))),  # type: ignore[union-attr]
        workdir=data_dir.parent, target=None)
    try:
        assert copy.server.is_running()
        with psycopg.connect(copy.local_dsn(cluster.owner_dsn())) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        copy.remove()


def test_restore_to_a_time_starts_a_new_server_on_another_port(cluster: Cluster) -> None:
    with psycopg.connect(cluster.owner_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.pitr_probe (v int)")
        conn.execute("INSERT INTO public.pitr_probe VALUES (1)")
        # The target is row 1's own commit time (track_commit_timestamp is on);
        # row 2 commits once the clock has moved past it.
        row = conn.execute("SELECT max(pg_xact_commit_timestamp(xmin)) FROM public.pitr_probe "
                           "WHERE v = 1").fetchone()
        assert row is not None
        target: datetime = row[0]
        assert hostctl.wait_until(lambda: conn.execute(
            "SELECT clock_timestamp() > %s", (target,)).fetchone() == (True,), timeout=10)
        conn.execute("INSERT INTO public.pitr_probe VALUES (2)")
    pgbr(cluster).check()
    workdir = restore.new_workdir(layout(cluster.cfg).restores)
    copy = restore.restore(pgbr(cluster), workdir, target=restore.format_target(target))
    try:
        assert copy.server.port != cluster.cfg.postgres.port
        dsn = conninfo(cluster.owner_dsn(), port=copy.server.port)
        restore.wait_promoted(copy, dsn)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT array_agg(v) FROM public.pitr_probe").fetchone() == ([1],)
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
    finally:
        copy.remove()
