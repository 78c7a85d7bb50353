"""Scheduled backups and restores that reach any target, against real processes.

A primary with WAL archiving, the platform database and a pgBackRest stanza,
made by the local backend's own providers with the inputs `pulumi up` gives
them, on a free port in a scratch directory. The incr schedule is every
minute, so the scheduler has something to do within the test's patience.

The dev stack's path (the scheduler on the Docker host, pgBackRest in the primary
container through `docker exec -u postgres <container>`) is driven here through
DOCKER_STAND_IN: a stand-in for the Docker CLI only, which checks the `exec -u
USER CONTAINER` shape, records the call, becomes USER and runs the command on
this machine. The database, the repository and pgBackRest are real.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra import config, hostctl
from infra.backends import local
from infra.backends.local_backup import BackupProvider
from infra.backends.local_backup_scheduler import (
    BackupSchedulerProvider,
    daemon,
    scheduler_props,
)
from infra.backends.local_layout import layout
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backup import hot_standby, restore
from infra.errors import PlatformError, ProcessError
from infra.health.probes import probe_backups
from infra.hostctl.files import service_ids
from infra.hostctl.pgbackrest import PgBackRest
from infra.hostctl.proc import send
from tests import ports
from tests.support import scratch_dir, write_tls

ROOT = Path(__file__).resolve().parents[2]
EVERY_MINUTE = "* * * * *"
NEW_INCR_WITHIN = 180.0  # the acceptance bound: a new incr within 3 minutes


@dataclass
class Stack:
    base: Path
    settings: dict[str, Any]
    passwords: dict[str, str]
    outs: dict[str, dict[str, Any]]

    @property
    def cfg(self) -> config.PlatformConfig:
        return config.load(self.settings, "test")

    def owner_dsn(self) -> str:
        pg = self.cfg.postgres
        return hostctl.Server(Path("/"), pg.port, pg.listen_address).dsn(
            pg.owner_role, self.passwords["owner"], pg.database)

    def pgbr(self) -> PgBackRest:
        return PgBackRest(config=layout(self.cfg).pgbackrest_conf,
                          stanza=self.cfg.backup.stanza)

    def scheduler_props(self) -> dict[str, Any]:
        return local.backup_scheduler_props(self.cfg)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        lay = layout(self.cfg)
        return subprocess.run(
            [sys.executable, "-m", "infra", "backup", *args,
             "--config", str(lay.pgbackrest_conf), "--stanza", self.cfg.backup.stanza,
             "--dsn", self.owner_dsn(), "--restores-dir", str(lay.restores)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    base = scratch_dir("pgp-sched-")
    settings: dict[str, Any] = {
        "state_dir": str(base),
        "postgres": {"port": ports.stack_port(), "max_connections": 40},
        "backup": {"schedule": {"full": "0 1 1 * *", "diff": "", "incr": EVERY_MINUTE}},
    }
    cfg = config.load(settings, "test")
    pw = {k: secrets.token_urlsafe(24) for k in ("superuser", "owner", "app", "replication")}
    tls = write_tls(Path(layout(cfg).tls.ca_file).parent)
    st = Stack(base=base, settings=settings, passwords=pw, outs={})
    made: list[tuple[Any, str]] = []
    try:
        for key, provider, props in [
            ("primary", PostgresServerProvider(),
             local.primary_props(cfg, pw["superuser"], tls, timescaledb=False)),
            ("database", DatabaseProvider(),
             local.database_props(cfg, pw["superuser"], pw["app"], pw["replication"],
                                  owner_pw=pw["owner"])),
            ("backup", BackupProvider(), local.backup_props(cfg)),
        ]:
            st.outs[key] = dict(provider.create(props).outs or {})
            made.append((provider, key))
        yield st
    finally:
        for provider, key in reversed(made):
            with contextlib.suppress(Exception):
                provider.delete("", st.outs[key])
        hostctl.Server(Path(layout(cfg).primary_paths().data_dir), cfg.postgres.port).remove()
        shutil.rmtree(base, ignore_errors=True)


def _incr_labels(st: Stack) -> set[str]:
    return {b["label"] for b in st.pgbr().info().get("backup", []) if b["type"] == "incr"}


def test_scheduler_takes_an_incr_backup_with_no_user_action(stack: Stack) -> None:
    provider = BackupSchedulerProvider()
    props = stack.scheduler_props()
    before = _incr_labels(stack)
    outs = dict(provider.create(props).outs or {})
    try:
        d = daemon(outs)
        pid = d.running_pid()
        assert pid is not None
        # It runs as the service user when we are root (pgBackRest must).
        uid = os.stat(f"/proc/{pid}").st_uid
        assert uid == (service_ids()[0] if hostctl.as_service_user() else os.getuid())
        new = hostctl.wait_until(lambda: _incr_labels(stack) - before or None,
                               NEW_INCR_WITHIN, 2.0)
        assert new, f"no incr backup within {NEW_INCR_WITHIN:.0f}s; log:\n{d.tail()}"
        log = d.tail()
        assert re.search(r"incr backup of stanza main: done in", log), log
        assert stack.passwords["owner"] not in log and stack.passwords["superuser"] not in log
    finally:
        provider.delete("", outs)
    assert daemon(outs).running_pid() is None


def test_a_killed_scheduler_is_seen_by_read_and_restarted_by_update(stack: Stack) -> None:
    provider = BackupSchedulerProvider()
    outs = dict(provider.create(stack.scheduler_props()).outs or {})
    try:
        d = daemon(outs)
        pid = d.running_pid()
        assert pid is not None
        send(pid, signal.SIGKILL)
        assert hostctl.wait_until(lambda: d.running_pid() is None, 10)
        seen = dict(provider.read(str(d.pid_file), outs).outs or {})
        assert seen["running"] is False
        assert provider.diff("", seen, stack.scheduler_props()).changes is True
        outs = dict(provider.update("", seen, stack.scheduler_props()).outs or {})
        assert daemon(outs).running_pid() not in (None, pid)
        # An unchanged, running scheduler is left alone by the next `up`.
        again = dict(provider.read(str(d.pid_file), outs).outs or {})
        assert provider.diff("", again, stack.scheduler_props()).changes is False
    finally:
        provider.delete("", outs)


CONTAINER = "pgp-test-primary"
DOCKER_STAND_IN = """#!{python}
# A stand-in for the Docker CLI's `docker exec -u USER CONTAINER CMD...` (no Docker engine
# here): the command runs on this machine, as USER, and each call is recorded.
import json, os, pwd, shutil, sys
args = sys.argv[1:]
if args[:2] != ["exec", "-u"] or len(args) < 5:
    sys.exit(f"docker stand-in: unsupported arguments {{args}}")
user, container, cmd = args[2], args[3], args[4:]
if container != {container!r}:
    sys.exit(f"Error response from daemon: No such container: {{container}}")
with open({calls!r}, "a") as out:
    out.write(json.dumps({{"user": user, "container": container, "argv": cmd,
                          "uid": os.geteuid(), "env": sorted(os.environ)}}) + "\\n")
program = shutil.which(cmd[0]) or cmd[0]   # before the switch: this interpreter's
if os.geteuid() == 0:                      # library may be out of USER's reach
    ent = pwd.getpwnam(user)
    os.setgroups([]); os.setgid(ent.pw_gid); os.setuid(ent.pw_uid)
    os.environ["HOME"] = ent.pw_dir
os.execv(program, cmd)
"""


@pytest.fixture
def docker_stand_in(stack: Stack) -> Iterator[tuple[list[str], Path]]:
    """The dev stack's exec prefix, through the stand-in CLI; and its call record."""
    where = stack.base / "docker-cli-stand-in"
    where.mkdir(mode=0o755, exist_ok=True)
    calls, cli = where / "calls.jsonl", where / "docker"
    cli.write_text(DOCKER_STAND_IN.format(python=sys.executable, container=CONTAINER,
                                          calls=str(calls)))
    cli.chmod(0o755)
    yield [str(cli), "exec", "-u", "postgres", CONTAINER], calls
    shutil.rmtree(where, ignore_errors=True)


def _calls(calls: Path) -> list[dict[str, Any]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_scheduler_takes_incr_backups_through_an_exec_prefix(
        stack: Stack, docker_stand_in: tuple[list[str], Path]) -> None:
    """The dev stack's scheduler, as the docker backend declares it: it stays the user it
    was started as (the CLI's access to the engine) and the prefix switches to postgres."""
    prefix, calls = docker_stand_in
    run_dir = stack.base / "dev-backup-scheduler"
    sched = stack.cfg.backup.schedule
    props = scheduler_props(
        config_path=str(layout(stack.cfg).pgbackrest_conf), stanza=stack.cfg.backup.stanza,
        schedule={"full": sched.full, "diff": sched.diff, "incr": sched.incr},
        run_dir=str(run_dir), log_path=str(run_dir), exec_prefix=prefix)
    provider = BackupSchedulerProvider()
    before = _incr_labels(stack)
    outs = dict(provider.create(props).outs or {})
    try:
        d = daemon(outs)
        pid = d.running_pid()
        assert pid is not None
        assert os.stat(f"/proc/{pid}").st_uid == os.getuid()
        new = hostctl.wait_until(lambda: _incr_labels(stack) - before or None,
                                 NEW_INCR_WITHIN, 2.0)
        log = d.tail()
        assert new, f"no incr backup within {NEW_INCR_WITHIN:.0f}s; log:\n{log}"
        assert "pgbackrest through " + " ".join(prefix) in log, log
        assert re.search(r"incr backup of stanza main: done in", log), log
        assert stack.passwords["owner"] not in log and stack.passwords["superuser"] not in log
        made = [c for c in _calls(calls) if "backup" in c["argv"]]
        assert made, _calls(calls)
        call = made[0]
        assert (call["user"], call["container"]) == ("postgres", CONTAINER)
        assert call["argv"][:3] == ["pgbackrest", f"--config={props['config_path']}",
                                    "--stanza=main"]
        assert "--type=incr" in call["argv"] and call["uid"] == os.getuid()
        assert not any(k.startswith("PGPASS") for k in call["env"]), call["env"]
    finally:
        provider.delete("", outs)
    assert daemon(outs).running_pid() is None and not run_dir.exists()


def test_backup_info_through_an_exec_prefix_gives_the_ages_health_reads(
        stack: Stack, docker_stand_in: tuple[list[str], Path]) -> None:
    """Health's backup ages come from `pgbackrest info` run the same way; a wrong container
    fails with the CLI's message, so the prefix is really on the path."""
    prefix, calls = docker_stand_in
    pgbr = PgBackRest(config=layout(stack.cfg).pgbackrest_conf,
                      stanza=stack.cfg.backup.stanza, exec_prefix=tuple(prefix))
    got = probe_backups(stack.owner_dsn(), pgbr.config, pgbr.stanza, pgbr.exec_prefix)
    assert got.available and got.error is None, got
    assert got.count["full"] >= 1 and got.age_seconds["full"] is not None, got
    assert got.source and got.source.endswith(" through " + " ".join(prefix)), got.source
    assert _calls(calls)[-1]["argv"][-2:] == ["--output=json", "info"]
    wrong = PgBackRest(config=pgbr.config, stanza=pgbr.stanza,
                       exec_prefix=(*prefix[:-1], "pgp-test-missing"))
    with pytest.raises(PlatformError, match="No such container: pgp-test-missing"):
        wrong.info()
    with pytest.raises(ValueError, match="peer"):
        PgBackRest(config=pgbr.config, stanza=pgbr.stanza, exec_prefix=tuple(prefix),
                   password=stack.passwords["owner"])


def test_backup_run_works_standalone_without_a_dsn(stack: Stack) -> None:
    lay = layout(stack.cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "infra", "backup", "run", "--type", "diff",
         "--config", str(lay.pgbackrest_conf), "--stanza", stack.cfg.backup.stanza],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^diff backup \S+D of stanza main done in", proc.stdout), proc.stdout
    assert any(b["type"] == "diff" for b in stack.pgbr().info()["backup"])


def _set_max_connections(stack: Stack, value: int) -> None:
    """A routine change: the stack file's max_connections, applied as `up` applies it."""
    old = local.primary_props(stack.cfg, stack.passwords["superuser"],
                              layout(stack.cfg).tls, timescaledb=False)
    stack.settings["postgres"]["max_connections"] = value
    new = local.primary_props(stack.cfg, stack.passwords["superuser"],
                              layout(stack.cfg).tls, timescaledb=False)
    outs = PostgresServerProvider().update("", {**stack.outs["primary"], **old}, new).outs
    stack.outs["primary"] = dict(outs or {})
    with psycopg.connect(stack.owner_dsn()) as conn:
        assert conn.execute("SHOW max_connections").fetchone() == (str(value),)


def test_drill_passes_after_a_max_connections_increase(stack: Stack) -> None:
    stack.pgbr().backup("full")  # the backup the drill restores has max_connections 40
    _set_max_connections(stack, 60)
    proc = stack.cli("drill", "--rows", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "drill PASSED: 0 lost, 0 extra" in proc.stdout, proc.stdout
    assert not any(layout(stack.cfg).restores.iterdir())


def test_restore_follows_a_raise_the_primary_no_longer_has(stack: Stack) -> None:
    """Raised, then lowered again: only the WAL knows the higher value; the copy's log
    names it and the restore restarts the copy with it."""
    stack.pgbr().backup("full")
    _set_max_connections(stack, 90)
    _set_max_connections(stack, 40)
    proc = stack.cli("drill", "--rows", "5", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "drill PASSED" in proc.stdout, proc.stdout
    assert re.search(r"needs higher settings for its WAL: max_connections=90; restarting",
                     proc.stderr), proc.stderr


@pytest.mark.parametrize("when", ["before any backup", "past the archive"])
def test_a_failed_restore_leaves_no_directory(stack: Stack, when: str) -> None:
    """Before any backup pgBackRest refuses, after making the directory; past the end of
    the archive the copy is restored in full, then recovery ends short of its target."""
    restores = layout(stack.cfg).restores
    target = ("2001-01-01 00:00:00+00" if when == "before any backup"
              else restore.format_target(datetime.now(UTC) + timedelta(days=1)))
    proc = stack.cli("restore", "--target", target, timeout=900)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    expected = ("unable to find backup set" if when == "before any backup"
                else "recovery ended before configured recovery target was reached")
    assert expected in proc.stderr, proc.stderr
    assert not restores.exists() or not any(restores.iterdir()), list(restores.iterdir())


def test_a_restore_that_fails_to_start_removes_its_copy(stack: Stack) -> None:
    restores = layout(stack.cfg).restores
    workdir = restore.new_workdir(restores)
    # The primary's own port: the copy's postmaster cannot bind it and does not start.
    with pytest.raises(ProcessError, match="did not start"):
        restore.restore(stack.pgbr(), workdir, target=None, port=stack.cfg.postgres.port)
    assert not workdir.exists()


def test_destroy_removes_every_restore_directory_even_a_running_one(stack: Stack) -> None:
    """Last in this module: it is the stack's destroy of its backups."""
    lay = layout(stack.cfg)
    # No primary DSN: the settings come from the backup's pg_controldata alone.
    copy = restore.restore(stack.pgbr(), restore.new_workdir(lay.restores), target=None)
    (lay.restores / "leftover-from-an-old-run").mkdir()
    assert copy.server.is_running()
    assert set(copy.settings) == set(hot_standby.PARAMETERS)
    restore.wait_promoted(copy, copy.local_dsn(stack.owner_dsn()))
    with psycopg.connect(copy.local_dsn(stack.owner_dsn())) as conn:
        for guc, value in copy.settings.items():
            assert conn.execute(f"SHOW {guc}").fetchone() == (str(value),), guc
    BackupProvider().delete("", stack.outs["backup"])
    assert not copy.server.is_running()
    assert not lay.restores.exists()
