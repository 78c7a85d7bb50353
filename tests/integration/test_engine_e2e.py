"""One real `pulumi up`, refresh and destroy of a throw-away local stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from infra import hostctl
from tests import ports
from tests.engine import ThrowawayStack, stack_up

pytestmark = pytest.mark.engine

TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "free"}]


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    with stack_up("e2e", {"postgres": {"port": ports.stack_port()}, "tenants": TENANTS}) as s:
        yield s


def files_holding(root: Path, needle: str) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(path)
            except PermissionError:
                continue
    return hits


def test_up_gives_working_dsns_and_postgis(stack: ThrowawayStack) -> None:
    out = stack.outputs()
    with psycopg.connect(out["primary_dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        assert conn.execute("SELECT postgis_lib_version()").fetchone()
    with psycopg.connect(out["app_dsn"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    assert out["replica_dsns"] == []


def test_up_applies_every_track_and_the_tenants(stack: ThrowawayStack) -> None:
    out = stack.outputs()
    files = sorted(p.relative_to(stack.project / "sql").as_posix()
                   for p in (stack.project / "sql").rglob("*.sql"))
    assert out["applied_migrations"] == files
    with psycopg.connect(out["primary_dsn"]) as conn:
        slugs = [r[0] for r in conn.execute("SELECT slug FROM public.tenants ORDER BY 1")]
    assert slugs == ["acme", "globex"]


def test_a_new_migration_shows_in_preview_and_up_applies_it(stack: ThrowawayStack) -> None:
    new = stack.project / "sql" / "schema" / "V9000__e2e_marker.sql"
    new.write_text("CREATE TABLE public.e2e_marker (id int);\n")
    preview = stack.preview()
    assert "V9000__e2e_marker.sql" in preview.stdout
    stack.up()
    with psycopg.connect(stack.outputs()["primary_dsn"]) as conn:
        assert conn.execute("SELECT to_regclass('public.e2e_marker')").fetchone() == (
            "e2e_marker",)
    after = stack.preview("--expect-no-changes", check=False)
    assert after.returncode == 0, after.stdout


def test_second_preview_reports_no_changes(stack: ThrowawayStack) -> None:
    proc = stack.preview("--expect-no-changes", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_no_plaintext_password_in_state_or_data(stack: ThrowawayStack) -> None:
    out = stack.outputs()
    passwords = {str(conninfo_to_dict(dsn)["password"])
                 for dsn in (out["primary_dsn"], out["app_dsn"])}
    assert all(len(p) >= 32 for p in passwords)
    for password in passwords:
        assert files_holding(stack.base, password) == []
    preview = stack.preview().stdout
    assert not any(p in preview for p in passwords)


def test_refresh_notices_a_stopped_server_and_up_starts_it(stack: ThrowawayStack) -> None:
    data_dir = stack.state_dir / "primary"
    port = str(conninfo_to_dict(stack.outputs()["primary_dsn"])["port"])
    server = hostctl.Server(data_dir, int(port))
    server.stop()
    stack.pulumi("refresh", "--yes")
    assert "update" in stack.preview().stdout
    stack.up()
    assert server.is_running()
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def test_destroy_stops_the_server_and_removes_its_data(stack: ThrowawayStack) -> None:
    stack.destroy()
    assert not (stack.state_dir / "primary").exists()
    assert stack.outputs() == {}
