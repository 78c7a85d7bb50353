"""Fault tests: real processes are killed, raced and fed bad input, and must not lose data.

R2 (two concurrent applies), R3 (tampered migration) and R4 (failing migration
rolled back with file:line) are proven in test_schema_engine.py; the rest are here.
R1 uses its own server; R5 runs most configs through config.load and a few
through the engine; R6-R8 attack the session's throw-away stack (tests/infra/throwaway.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import config, hostctl
from infra.backends.local_layout import layout, replicas
from infra.errors import ConfigError
from infra.hostctl import standby
from infra.hostctl.pgbouncer import PgBouncer
from tests import ports
from tests.engine import ThrowawayStack
from tests.infra.throwaway import shared_stack
from tests.support import fresh_database, start_server

ROOT = Path(__file__).resolve().parents[2]


def kill9(data_dir: Path) -> None:
    """SIGKILL a postmaster and every child of it, as a power cut would."""
    pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    for p in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in [pid, *children]):
        assert time.monotonic() < deadline, "killed processes did not go away"
        time.sleep(0.05)


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


# --- R1: kill -9 the primary during a long migration ---------------------------------

LONG = """CREATE TABLE half (id int PRIMARY KEY);
INSERT INTO half SELECT generate_series(1, 50000);
SELECT pg_sleep(CASE WHEN current_setting('pgp.slow', true) = 'on' THEN 60 ELSE 0 END);
UPDATE base SET v = v + 1;
"""


def test_r1_kill9_during_a_long_migration_then_apply_again(tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    (sql_dir / "schema").mkdir(parents=True)
    (sql_dir / "schema" / "V1__base.sql").write_text(
        "CREATE TABLE base (id int PRIMARY KEY, v int NOT NULL);\n"
        "INSERT INTO base SELECT g, 0 FROM generate_series(1, 1000) g;\n")
    (sql_dir / "schema" / "V2__long.sql").write_text(LONG)
    with start_server() as running, fresh_database(running) as db:
        args = [sys.executable, "-m", "infra.schema", "apply", "--dsn", db.dsn,
                "--sql-dir", str(sql_dir)]
        # Only this first run is slow: the setting exists in its sessions alone.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PGOPTIONS": "-c pgp.slow=on"}
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not query(db.dsn, "SELECT 1 FROM pg_stat_activity WHERE query LIKE "
                                "'%pg_sleep(CASE%' AND state = 'active' AND pid <> "
                                "pg_backend_pid()"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        kill9(running.server.data_dir)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        password = str(conninfo_to_dict(db.dsn)["password"])
        assert password and password not in err  # the failure does not print credentials

        running.server.start()
        running.server.wait_ready()
        # Crash recovery kept V1 and nothing of V2: no table, no history row, no update.
        assert query(db.dsn, "SELECT to_regclass('half')") == [(None,)]
        assert query(db.dsn, "SELECT version FROM pgplatform.schema_history "
                             "ORDER BY installed_rank") == [("1",)]
        assert query(db.dsn, "SELECT count(*), sum(v) FROM base") == [(1000, 0)]

        again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
        assert again.returncode == 0, again.stderr
        assert query(db.dsn, "SELECT version, success FROM pgplatform.schema_history "
                             "ORDER BY installed_rank") == [("1", True), ("2", True)]
        assert query(db.dsn, "SELECT count(*) FROM half") == [(50000,)]
        assert query(db.dsn, "SELECT count(*), sum(v) FROM base") == [(1000, 1000)]
        assert query(db.dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == \
            [(0,)]


# --- R5: bad stack configs are refused before anything exists, naming their key --------

BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"replicas": 6}, "pg-platform:replicas"),
    ({"replicas": "two"}, "pg-platform:replicas"),
    ({"backend": "k8s"}, "pg-platform:backend"),
    ({"postgres": {"version": 12}}, "pg-platform:postgres.version"),
    ({"postgres": {"port": 80}}, "pg-platform:postgres.port"),
    ({"postgres": {"database": "Bad-Name"}}, "pg-platform:postgres.database"),
    ({"postgres": {"app_role": "platform_owner"}}, "pg-platform:postgres.app_role"),
    ({"postgres": {"owner_role": "postgres"}}, "pg-platform:postgres.owner_role"),
    ({"postgres": {"max_connections": 5}}, "pg-platform:postgres.max_connections"),
    ({"postgres": {"max_connections": 20, "superuser_reserved_connections": 20}},
     "pg-platform:postgres.superuser_reserved_connections"),
    ({"postgres": {"shared_buffers": "lots"}}, "pg-platform:postgres.shared_buffers"),
    ({"postgres": {"parameters": {"port": "5"}}}, "pg-platform:postgres.parameters.port"),
    ({"postgres": {"parameters": {"work mem": "1"}}},
     "pg-platform:postgres.parameters.work mem"),
    ({"postgres": {"colour": "blue"}}, "pg-platform:postgres.colour"),
    ({"postgres": "big"}, "pg-platform:postgres"),
    ({"tenants": [{"slug": "Bad Slug"}]}, "pg-platform:tenants[0].slug"),
    ({"tenants": [{"slug": "acme"}, {"slug": "acme"}]}, "pg-platform:tenants[1].slug"),
    ({"tenants": [{"slug": "acme", "plan": "gold"}]}, "pg-platform:tenants[0].plan"),
    ({"tenants": {"slug": "acme"}}, "pg-platform:tenants"),
    ({"pooler": {"pool_mode": "magic"}}, "pg-platform:pooler.pool_mode"),
    ({"pooler": {"default_pool_size": 500}}, "pg-platform:pooler.default_pool_size"),
    ({"pooler": {"admin_user": "app"}}, "pg-platform:pooler.admin_user"),
    ({"pooler": {"min_pool_size": 30, "default_pool_size": 20}},
     "pg-platform:pooler.min_pool_size"),
    ({"backup": {"stanza": "bad stanza!"}}, "pg-platform:backup.stanza"),
    ({"backup": {"repo": "ftp"}}, "pg-platform:backup.repo"),
    ({"backup": {"retention_full": 0}}, "pg-platform:backup.retention_full"),
    ({"backup": {"schedule": {"full": "every day"}}}, "pg-platform:backup.schedule.full"),
    ({"backup": {"schedule": {"full": ""}}}, "pg-platform:backup.schedule.full"),
    ({"backup": {"s3": {"bucket": "b"}}}, "pg-platform:backup.s3.bucket"),
    ({"state_dir": 5}, "pg-platform:state_dir"),
    ({"no_such_setting": 1}, "pg-platform:no_such_setting"),
]


@pytest.mark.parametrize(("raw", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_r5_a_bad_config_is_refused_naming_its_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(raw, "local")
    message = str(err.value)
    assert message.startswith(key) or f" {key}" in message or f"{key}=" in message, message


def test_r5_there_are_at_least_twenty_distinct_bad_configs() -> None:
    assert len({repr(raw) for raw, _ in BAD_CONFIGS}) >= 20


# Through the real engine: the program refuses these before registering any resource.
ENGINE_BAD: list[tuple[dict[str, Any], str]] = [
    ({"replicas": 6}, "pg-platform:replicas"),
    ({"pooler": {"default_pool_size": 500}}, "pg-platform:pooler.default_pool_size"),
    ({"tenants": [{"slug": "Bad Slug", "name": "x", "plan": "free"}]},
     "pg-platform:tenants[0].slug"),
    # Checked by the local backend (replicas need a loopback address), not by config.load.
    ({"replicas": 1, "postgres": {"listen_address": "0.0.0.0"}},
     "pg-platform:postgres.listen_address"),
    # A version config allows but this machine has no server for (infra/backends/base.py).
    ({"postgres": {"version": 16}}, "pg-platform:postgres.version=16: the local backend can "
     f"run {', '.join(map(str, hostctl.installed_versions()))}"),
]


@pytest.mark.engine
def test_r5_the_engine_refuses_bad_configs_and_creates_nothing() -> None:
    stack = ThrowawayStack("bad", {})
    try:
        stack.init()
        for i, (raw, key) in enumerate(ENGINE_BAD):
            stack.set_config({"postgres": {"port": ports.stack_port()}, **raw})
            # `up` for the first (nothing may be made), `preview` for the rest.
            proc = (stack.pulumi("up", "--yes", check=False) if i == 0 else
                    stack.preview(check=False))
            assert proc.returncode != 0, proc.stdout[-2000:]
            assert key in proc.stdout + proc.stderr, (key, proc.stdout[-2000:])
            assert "Traceback" not in proc.stdout + proc.stderr, (key, proc.stdout[-2000:])
        exported = stack.pulumi("stack", "export").stdout
        assert "pulumi-python:dynamic" not in exported
        assert not stack.state_dir.exists()
    finally:
        stack.remove()


# --- R6-R8 against a whole stack made by `pulumi up` ----------------------------------


@pytest.fixture(scope="module")
def stack(pytestconfig: pytest.Config) -> ThrowawayStack:
    return shared_stack(pytestconfig)


@pytest.fixture(scope="module")
def stack_cfg(stack: ThrowawayStack) -> config.PlatformConfig:
    return stack.ref.config()


@pytest.mark.engine
def test_r6_pitr_drill_loses_nothing_before_t_and_restores_nothing_after(
        stack: ThrowawayStack) -> None:
    proc = stack.drill(rows=10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rows committed <= T: 10, present after restore: 10, lost: 0" in proc.stdout
    assert "rows committed >  T: 10, present after restore: 0 (extra)" in proc.stdout
    assert "drill PASSED" in proc.stdout


@pytest.mark.engine
def test_r7_a_killed_replica_restarts_and_catches_up(
        stack: ThrowawayStack, stack_cfg: config.PlatformConfig) -> None:
    out = stack.outputs()
    rep = replicas(stack_cfg)[0]
    owner = conninfo_to_dict(out["primary_dsn"])
    replica_owner = make_conninfo(out["replica_dsns"][0], user=str(owner["user"]),
                                  password=str(owner["password"]))
    # pg_stat_wal_receiver's fields are pg_monitor's to read (the owner is no superuser).
    watcher = conninfo_to_dict(out.get("monitor_dsn") or out["primary_dsn"])
    replica_watcher = make_conninfo(out["replica_dsns"][0], user=str(watcher["user"]),
                                    password=str(watcher["password"]))
    query(out["primary_dsn"], "CREATE TABLE IF NOT EXISTS public.r7_rows (n int)")
    query(out["primary_dsn"], "TRUNCATE public.r7_rows")
    kill9(Path(rep.paths.data_dir))
    # Written while the replica is down: its slot keeps the WAL for it.
    query(out["primary_dsn"], "INSERT INTO public.r7_rows SELECT generate_series(1, 5000)")
    query(out.get("superuser_dsn") or out["primary_dsn"], "SELECT pg_switch_wal()")
    assert query(out["primary_dsn"], "SELECT active FROM pg_replication_slots "
                                     "WHERE slot_name = %s", (rep.slot,)) == [(False,)]
    # Restarted as the platform starts standbys: the replication password in its 0600
    # passfile (primary_conninfo names it), never in its environment.
    server = hostctl.Server(Path(rep.paths.data_dir), rep.port, rep.host)
    standby.start(server, None, passfile=Path(rep.passfile))
    server.wait_ready()
    deadline = time.monotonic() + 60
    while True:
        try:
            seen = query(replica_owner, "SELECT count(*) FROM public.r7_rows")
        except psycopg.Error:
            seen = []
        if seen == [(5000,)]:
            break
        assert time.monotonic() < deadline, f"replica has {seen} of 5000 rows after 60s"
        time.sleep(0.1)
    assert query(replica_watcher, "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)]
    assert query(out["primary_dsn"], "SELECT active FROM pg_replication_slots "
                                     "WHERE slot_name = %s", (rep.slot,)) == [(True,)]


class Writer(threading.Thread):
    """An application client: inserts numbered rows, reconnecting after any failure."""

    def __init__(self, dsn: str, ident: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.dsn, self.writer_id, self.stop_at = dsn, ident, stop
        self.confirmed: list[int] = []   # commit returned: must be in the table
        self.in_doubt: list[int] = []    # the connection broke mid-statement
        self.reconnects = 0
        self.confirmed_after_restart = 0
        self.restarted = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_at.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None,
                                     connect_timeout=5) as conn:
                    while not self.stop_at.is_set():
                        n += 1
                        try:
                            conn.execute("INSERT INTO public.r8_ledger (writer, n) "
                                         "VALUES (%s, %s)", (self.writer_id, n))
                        except psycopg.OperationalError:
                            self.in_doubt.append(n)
                            raise
                        self.confirmed.append(n)
                        if self.restarted.is_set():
                            self.confirmed_after_restart += 1
                        time.sleep(0.002)
            except psycopg.OperationalError:
                self.reconnects += 1
                time.sleep(0.05)


@pytest.mark.engine
def test_r8_pgbouncer_restart_under_pgbench(stack: ThrowawayStack,
                                            stack_cfg: config.PlatformConfig,
                                            tmp_path: Path) -> None:
    out = stack.outputs()
    app = conninfo_to_dict(out["pooler_dsn"])
    query(out["primary_dsn"], "CREATE TABLE IF NOT EXISTS public.r8_ledger "
                              "(writer int NOT NULL, n bigint NOT NULL, PRIMARY KEY (writer, n))")
    query(out["primary_dsn"], "TRUNCATE public.r8_ledger")
    query(out["primary_dsn"], f"GRANT SELECT, INSERT ON public.r8_ledger TO "
                              f"{stack_cfg.postgres.app_role}")
    script = tmp_path / "insert.sql"
    script.write_text("\\set n random(1, 1000000000000)\n"
                      "INSERT INTO public.r8_ledger (writer, n) VALUES (1000 + :client_id, :n) "
                      "ON CONFLICT DO NOTHING;\n")

    def pgbench(seconds: int) -> subprocess.Popen[str]:
        # The password goes in the environment, never on the command line.
        target = make_conninfo(out["pooler_dsn"], password=None)
        return subprocess.Popen(
            [str(hostctl.bin_dir() / "pgbench"), "-n", "-c", "3", "-T", str(seconds),
             "-f", str(script), target], env={**os.environ, "PGPASSWORD": str(app["password"])},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    stop = threading.Event()
    writers = [Writer(out["pooler_dsn"], i, stop) for i in range(3)]
    for w in writers:
        w.start()
    bench = pgbench(6)
    # Restart only once every writer is committing through PgBouncer.
    assert hostctl.wait_until(lambda: all(w.confirmed for w in writers), timeout=30), \
        "writers never committed through PgBouncer"
    lay = layout(stack_cfg)
    bouncer = PgBouncer(ini_path=lay.pooler_dir / "pgbouncer.ini",
                        pid_file=Path(lay.pooler_paths.pid_file or ""),
                        host=stack_cfg.postgres.listen_address, port=stack_cfg.pooler.port,
                        log_file=Path(lay.pooler_paths.log_file or ""))
    old_pid = bouncer.pid()
    assert old_pid is not None
    bouncer.stop()
    bouncer.start()
    for w in writers:
        w.restarted.set()
    assert bouncer.pid() not in (None, old_pid)
    bench.communicate(timeout=60)  # its clients lost their connections: pgbench aborts them
    recovered = hostctl.wait_until(
        lambda: all(w.confirmed_after_restart > 0 for w in writers), timeout=30)
    stop.set()
    for w in writers:
        w.join(15)

    # Clients recover: every writer reconnected and committed again after the restart,
    # and a new pgbench run through the restarted PgBouncer has no failure at all.
    assert recovered and all(w.reconnects >= 1 for w in writers), \
        [(w.reconnects, w.confirmed_after_restart) for w in writers]
    after = pgbench(2)
    after_out, after_err = after.communicate(timeout=60)
    assert after.returncode == 0, after_err[-1000:]
    assert "number of failed transactions: 0" in after_out
    # Committed rows intact: every confirmed insert is there; nothing else but in-doubt ones.
    table = query(out["primary_dsn"], "SELECT writer, n FROM public.r8_ledger WHERE writer < 1000")
    stored: dict[int, set[int]] = {}
    for writer, n in table:
        stored.setdefault(writer, set()).add(n)
    for w in writers:
        assert set(w.confirmed) <= stored.get(w.writer_id, set())
        assert stored.get(w.writer_id, set()) <= set(w.confirmed) | set(w.in_doubt)
    query(out["primary_dsn"], "DROP TABLE public.r8_ledger")
