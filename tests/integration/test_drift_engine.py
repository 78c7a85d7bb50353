"""Hand edits are found by `pulumi refresh` and undone by `pulumi up` (issue #16).

One throw-away local stack. Each test makes one change behind Pulumi's back -
`auth_type = trust` in pgbouncer.ini, a line appended to postgresql.conf,
`ALTER SYSTEM SET`, a changed pgbackrest.conf - then checks that refresh
marks the resource for update and records the finding in its `drift` output
(listed by `python -m infra drift`, which `make refresh` runs), that a preview
then plans the update, that `up` restores the rendered file and its effect,
and that the next preview is clean. The last test kills PgBouncer and brings
it back with `up --refresh` alone, as `make up` runs it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.hostctl.proc import pid_from_file, send, wait_until
from infra.ops import drift as drift_cli
from tests import ports
from tests.engine import ThrowawayStack, stack_up

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    with stack_up("handedits", {"postgres": {"port": ports.stack_port()},
                            "monitoring": {"exporters": False}}) as s:
        yield s


def _refresh_reports(stack: ThrowawayStack, resource: str, path: Path | str) -> str:
    """Refresh; the one finding's text (the resource is marked for update, and previewed)."""
    proc = stack.pulumi("refresh", "--yes", "--diff")
    assert f"~ pulumi-python:dynamic/local:{resource}: (update)" in proc.stdout, proc.stdout
    found = drift_cli.findings(stack.ref)
    assert [name for name, _ in found] == [resource.lower()], found
    assert str(path) in found[0][1], found
    planned = stack.preview("--expect-no-changes", check=False)
    assert planned.returncode != 0, "refresh found drift, but preview plans nothing"
    assert f"~ pulumi-python:dynamic/local:{resource}: (update)" in planned.stdout
    return found[0][1]


def _repaired(stack: ThrowawayStack) -> None:
    stack.up()
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def _sql(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.execute(query)
        row = cur.fetchone() if cur.description else None
    return row[0] if row else None


def _pooler_setting(stack: ThrowawayStack, name: str) -> str:
    with psycopg.connect(stack.outputs()["pooler_admin_dsn"], autocommit=True) as conn:
        conn.prepare_threshold = None
        rows = conn.execute("SHOW CONFIG").fetchall()
    return next(str(r[1]) for r in rows if r[0] == name)


def test_auth_type_trust_in_pgbouncer_ini_is_found_and_undone(stack: ThrowawayStack) -> None:
    ini = stack.state_dir / "pgbouncer" / "pgbouncer.ini"
    rendered = ini.read_text()
    ini.write_text(rendered.replace("auth_type = scram-sha-256", "auth_type = trust"))
    pid = pid_from_file(stack.state_dir / "pgbouncer" / "pgbouncer.pid")
    assert pid is not None
    send(pid, signal.SIGHUP)  # what a hand edit is followed by
    assert wait_until(lambda: _pooler_setting(stack, "auth_type") == "trust", 10)
    _refresh_reports(stack, "Pooler", ini)
    _repaired(stack)
    assert ini.read_text() == rendered
    assert _pooler_setting(stack, "auth_type") == "scram-sha-256"


def test_a_line_appended_to_postgresql_conf_is_found_and_undone(stack: ThrowawayStack) -> None:
    conf = stack.state_dir / "primary" / "postgresql.conf"
    rendered = conf.read_text()
    dsn = stack.outputs()["superuser_dsn"]
    conf.write_text(rendered + "statement_timeout = '1234s'\n")
    _sql(dsn, "SELECT pg_reload_conf()")
    assert wait_until(lambda: _sql(dsn, "SHOW statement_timeout") == "1234s", 10)
    _refresh_reports(stack, "Primary", conf)
    _repaired(stack)
    assert conf.read_text() == rendered
    assert _sql(dsn, "SHOW statement_timeout") == "0"


def test_alter_system_is_found_and_undone(stack: ThrowawayStack) -> None:
    dsn = stack.outputs()["superuser_dsn"]
    _sql(dsn, "ALTER SYSTEM SET work_mem = '77MB'")
    _sql(dsn, "SELECT pg_reload_conf()")
    assert wait_until(lambda: _sql(dsn, "SHOW work_mem") == "77MB", 10)
    text = _refresh_reports(stack, "Primary", "postgresql.auto.conf")
    assert "overrides work_mem" in text and "77MB" not in text  # names, never values
    _repaired(stack)
    assert _sql(dsn, "SHOW work_mem") == "4MB"
    auto = (stack.state_dir / "primary" / "postgresql.auto.conf").read_text()
    assert "work_mem" not in auto


def test_a_changed_pgbackrest_conf_is_found_and_undone(stack: ThrowawayStack) -> None:
    conf = stack.state_dir / "pgbackrest" / "pgbackrest.conf"
    rendered = conf.read_text()
    conf.write_text(rendered.replace("repo1-retention-full=2", "repo1-retention-full=1"))
    _refresh_reports(stack, "Backup", conf)
    _repaired(stack)
    assert conf.read_text() == rendered
    assert drift_cli.findings(stack.ref) == []


def test_a_stopped_pooler_comes_back_with_up_refresh_alone(stack: ThrowawayStack) -> None:
    pid_file = stack.state_dir / "pgbouncer" / "pgbouncer.pid"
    pid = pid_from_file(pid_file)
    assert pid is not None
    send(pid, signal.SIGKILL)  # a crash: no clean shutdown
    assert wait_until(lambda: pid_from_file(pid_file) is None, 10)
    stack.up("--refresh", "--suppress-outputs")  # what `make up` runs
    assert pid_from_file(pid_file) is not None
    assert _sql(stack.outputs()["pooler_dsn"], "SELECT 1") == 1
    assert stack.preview("--expect-no-changes", check=False).returncode == 0
