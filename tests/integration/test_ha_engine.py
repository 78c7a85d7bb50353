"""A real `pulumi up` of a throw-away local stack with `ha.manager: patroni`:
etcd, two Patroni nodes, HAProxy, PgBouncer and the SQL, then a clean preview,
a refresh that sees a member down, an up that brings it back, and a destroy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from infra import hostctl, roles
from infra.backends.local_layout import layout
from infra.hostctl.foreground import wait_for
from infra.hostctl.patroni import from_config
from infra.hostctl.patroni import streaming as patroni_streaming
from infra.hostctl.pgbackrest import PgBackRest, full_backups
from infra.hostctl.proc import pid_from_file
from tests import ha_support, ports
from tests.engine import ThrowawayStack
from tests.timescale import ensure_installed

pytestmark = [pytest.mark.engine, pytest.mark.ha]
FIRST_UP: list[subprocess.CompletedProcess[str]] = []  # the module stack's first `up`
PREVIEWED = "Previewing update"  # what `pulumi up` prints before its preview


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    pg, cport, pport, rport, hport, bport = ports.ha_ports(ha_support.ETCD_HOSTS)
    s = ThrowawayStack("haup", {
        "replicas": 1, "postgres": {"port": pg, "max_connections": 50},
        "pooler": {"port": bport, "server_login_retry": 0.25},
        "ha": {"manager": "patroni", "synchronous": "on", "etcd_client_port": cport,
               "etcd_peer_port": pport, "restapi_port": rport, "haproxy_port": hport},
        # The runner takes every policy job over at once, so its runs are there to see.
        "timescaledb": {"job_runner": "supervised"}})
    ensure_installed()
    try:
        s.init()
        FIRST_UP.append(s.up())
        yield s
    finally:
        s.remove()


def test_up_serves_the_sql_through_haproxy_and_the_pooler(stack: ThrowawayStack) -> None:
    out = stack.outputs()
    with psycopg.connect(out["primary_dsn"]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert conn.execute("SELECT count(*) FROM public.tenants").fetchone() is not None
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    with psycopg.connect(out["replica_dsns"][0]) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_the_first_up_archived_every_segment_it_made(stack: ThrowawayStack) -> None:
    """The stanza comes from Patroni's bootstrap (post_init), before the first WAL switch
    (the replica's clone, the first backup): no archive-push ever found it missing. Before,
    the Backup resource made it after the leader, and pg-1 counted 4 failed pushes."""
    with psycopg.connect(stack.outputs()["monitor_dsn"]) as conn:
        row = conn.execute("SELECT archived_count, failed_count, last_failed_wal "
                           "FROM pg_stat_archiver").fetchone()
    assert row is not None
    archived, failed, last_failed = row
    assert archived >= 1  # the first backup's own segment, at least
    assert (failed, last_failed) == (0, None)
    log = (stack.state_dir / "secrets" / "pg-1.log").read_text()
    assert "post_init script" not in log  # Patroni logs a post_init failure so


def test_the_first_up_skipped_its_preview_and_refresh_agrees(stack: ThrowawayStack) -> None:
    """The stack held nothing, so `up` ran without its preview (infra/ops/first_up.py).
    The replica was made once it streamed; the state `up` recorded for it is what a
    refresh right after reads (Patroni's "running"), so the refresh changes nothing."""
    first = FIRST_UP[0]
    assert PREVIEWED not in first.stdout, first.stdout[:2000]
    assert "Updating (" in first.stdout
    stack.pulumi("refresh", "--yes", "--expect-no-changes")


def test_a_replica_counts_once_it_streams_and_only_then(stack: ThrowawayStack) -> None:
    """What the replica's create waited for (hostctl.patroni.streaming): true on the
    replica, false on the leader (no WAL receiver) and on a socket nothing serves."""
    port = stack.ref.config().postgres.port
    assert patroni_streaming(str(stack.state_dir / "run-pg-2"), port)
    assert not patroni_streaming(str(stack.state_dir / "run-pg-1"), port)
    assert not patroni_streaming(str(stack.state_dir / "run-pg-2"), port + 7)


def test_roles_keep_the_security_model_under_patroni(stack: ThrowawayStack) -> None:
    """Break-glass is the only superuser (Patroni's own login), the owner is none, and
    break-glass also logs in by peer on a node's socket as the service user."""
    out = stack.outputs()
    with psycopg.connect(out["superuser_dsn"]) as conn:
        supers = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper")]
        repl = conn.execute("SELECT rolname FROM pg_roles WHERE rolreplication "
                            "AND NOT rolsuper").fetchall()
        port = conn.execute("SHOW port").fetchone()
    assert supers == [roles.BREAK_GLASS]
    assert repl == [("replicator",)]
    with psycopg.connect(out["primary_dsn"]) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)
    with psycopg.connect(out["monitor_dsn"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (roles.MONITOR,)
    assert port is not None
    peer = subprocess.run(hostctl.service_cmd([
        "/usr/bin/psql", f"host={stack.state_dir / 'run-pg-1'} port={port[0]} "
        f"user={roles.BREAK_GLASS} dbname=postgres", "-Atc", "SELECT current_user"]),
        capture_output=True, text=True, timeout=30, check=False)
    assert peer.returncode == 0 and peer.stdout.strip() == roles.BREAK_GLASS, peer.stderr
    for node in ("pg-1", "pg-2"):
        text = (stack.state_dir / node / "pg_hba.conf").read_text()
        lines = [" ".join(line.split()) for line in text.splitlines()
                 if line.strip() and not line.startswith("#")]
        assert f"local all {roles.BREAK_GLASS} peer map=breakglass" in lines
        assert all(line.startswith("hostssl ") and line.endswith(" scram-sha-256")
                   for line in lines if not line.startswith("local "))


def test_timescaledb_is_preloaded_and_the_job_runner_runs_through_haproxy(
        stack: ThrowawayStack) -> None:
    dsn = stack.outputs()["primary_dsn"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables"
                            ).fetchall() == [("events",)]
        jobs = conn.execute("SELECT count(*) FROM timescaledb_information.jobs "
                            "WHERE job_id >= 1000").fetchone()
    assert jobs is not None and jobs[0] == 3

    def runs() -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(DISTINCT job_id) FROM "
                               "public.timescaledb_job_runs WHERE succeeded").fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: runs() == 3, timeout=90, what="the runner ran the three policy jobs")
    pid_file = stack.state_dir / "jobrunner" / "timescaledb-job-runner.pid"
    assert Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_second_up_changes_nothing(stack: ThrowawayStack) -> None:
    stack.preview("--expect-no-changes")


def test_switching_the_manager_off_is_refused_in_preview(stack: ThrowawayStack) -> None:
    """`ha.manager: none` over Patroni's cluster would delete pg-1's data directory."""
    settings = yaml.safe_load(stack.config_file.read_text())["config"]
    raw = {k.removeprefix("pg-platform:"): v for k, v in settings.items()}
    stack.set_config({**raw, "ha": {**raw["ha"], "manager": "none"}})
    try:
        proc = stack.preview(check=False)
        assert proc.returncode != 0
        assert "pg-platform:ha.manager=none: the stack's cluster in" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    finally:
        stack.set_config(raw)
    stack.preview("--expect-no-changes")


def cluster(s: ThrowawayStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m infra cluster ...` the way users run it (and `make status`)."""
    return subprocess.run(
        [sys.executable, "-m", "infra", "cluster", *args, "--stack", s.name, "--project-dir",
         str(s.project)], cwd=Path(__file__).resolve().parents[2], env=s.env,
        capture_output=True, text=True, timeout=300, check=False)


def test_cluster_status_and_a_switchover_by_command(stack: ThrowawayStack) -> None:
    status = cluster(stack, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "leader: pg-1"
    assert any(line.startswith("pg-2") and ("Replica" in line or "Sync Standby" in line)
               for line in lines)
    node = from_config(stack.state_dir / "secrets" / "pg-2.yml")
    wait_for(lambda: "Sync Standby" in cluster(stack, "status").stdout, timeout=60,
             what="a confirmed synchronous standby")
    done = cluster(stack, "switchover")
    assert done.returncode == 0, done.stderr
    assert "pg-1 -> pg-2" in done.stdout
    assert node.probe("/primary") == 200
    with psycopg.connect(stack.outputs()["pooler_dsn"], prepare_threshold=None) as conn:
        conn.execute("SELECT 1")
    # With synchronous on, Patroni hands over only to its confirmed synchronous standby.
    wait_for(lambda: "Sync Standby" in cluster(stack, "status").stdout, timeout=60,
             what="pg-1 confirmed as synchronous standby")
    back = cluster(stack, "switchover", "--candidate", "pg-1")
    assert back.returncode == 0, back.stderr
    # the stack, Patroni having moved the leader twice, still needs no change
    stack.preview("--expect-no-changes")


def test_drill_restores_the_cluster_after_its_leader_moved(stack: ThrowawayStack) -> None:
    """The PITR drill across the timelines the two switchovers made: the base backup is
    from pg-1's first timeline, the markers are written on the third, and recovery follows
    the history files the new leaders archived."""
    cfg = stack.ref.config()
    lay = layout(cfg)
    pgbr = PgBackRest(config=lay.pgbackrest_conf, stanza=cfg.backup.stanza)
    proc = stack.drill(rows=10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rows committed <= T: 10, present after restore: 10, lost: 0" in proc.stdout
    assert "rows committed >  T: 10, present after restore: 0 (extra)" in proc.stdout
    archive = pgbr.info()["archive"][0]
    assert int(archive["max"][:8], 16) >= 3, archive  # timeline 3: the leader moved twice
    assert len(full_backups(pgbr.info())) == 1  # restored from the first up's backup


def test_refresh_sees_a_member_down_and_up_brings_it_back(stack: ThrowawayStack) -> None:
    config_file = stack.state_dir / "secrets" / "pg-2.yml"
    node = from_config(config_file)
    # The switchover back made pg-2 a replica again: its PostgreSQL restarts meanwhile.
    node.wait_running(timeout=120)
    patroni, postmaster = node.daemon.pid(), node.postmaster_pid()
    assert patroni and postmaster
    os.kill(patroni, signal.SIGKILL)
    os.kill(postmaster, signal.SIGKILL)
    wait_for(lambda: not node.daemon.is_running(), timeout=10, what="pg-2 down")
    stack.pulumi("refresh", "--yes")
    assert stack.preview(check=False).returncode == 0
    # A stack that holds resources always previews first, on the tests' path as on
    # `make up`'s: only an empty stack skips it.
    again = stack.up()
    assert PREVIEWED in again.stdout, again.stdout[:2000]
    node.wait_running(timeout=60)
    stack.preview("--expect-no-changes")


def _fence_pid(stack: ThrowawayStack) -> int | None:
    """The fence's pid, if that process still runs the fence (pids get reused)."""
    pid = pid_from_file(stack.state_dir / "fence" / "fence.pid")
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    spec = str(stack.state_dir / "fence" / "fence.json").encode()
    return pid if b"infra.hostctl.fence" in argv and spec in argv else None


def test_refresh_sees_the_fence_killed_and_up_restarts_it(stack: ThrowawayStack) -> None:
    """The dead-leader fence (docs/ha.md) is a resource of its own: a killed one is
    reported stopped by read(), so refresh and up bring it back; nothing else changes."""
    pid = _fence_pid(stack)
    assert pid is not None
    spec = json.loads((stack.state_dir / "fence" / "fence.json").read_text())
    assert sorted(spec["members"]) == ["pg-1", "pg-2"]
    assert spec["prefix"] == f"/pg-platform/pg-platform-{stack.name}"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _fence_pid(stack) is None, timeout=10, what="the fence is gone")
    stack.pulumi("refresh", "--yes")
    preview = stack.preview()
    assert "fence" in preview.stdout and "update" in preview.stdout, preview.stdout
    stack.up()
    again = _fence_pid(stack)
    assert again is not None and again != pid
    stack.preview("--expect-no-changes")
    # Up and watching: its status names the leader it sees.
    status = stack.state_dir / "fence" / "fence.status.json"
    wait_for(lambda: status.exists() and json.loads(status.read_text()).get("leader")
             in ("pg-1", "pg-2"), timeout=30, what="the fence sees the leader")


def test_destroy_stops_every_process(stack: ThrowawayStack) -> None:
    base = str(stack.state_dir)
    stack.destroy()
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if base in cmd:
                left.append(cmd.replace("\0", " "))
    assert left == []
