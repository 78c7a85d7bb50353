"""One real `pulumi up`, refresh and destroy of a throw-away local stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infra import pgctl
from tests.engine import ThrowawayStack

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    s = ThrowawayStack("e2e", {"postgres": {"port": pgctl.free_port()}})
    try:
        s.init()
        s.up()
        yield s
    finally:
        s.remove()


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


def test_second_preview_reports_no_changes(stack: ThrowawayStack) -> None:
    proc = stack.preview("--expect-no-changes", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_no_plaintext_password_in_state_or_data(stack: ThrowawayStack) -> None:
    out = stack.outputs()
    passwords = {dsn.split(":")[2].split("@")[0] for dsn in (out["primary_dsn"], out["app_dsn"])}
    assert all(len(p) >= 32 for p in passwords)
    for password in passwords:
        assert files_holding(stack.base, password) == []
    preview = stack.preview().stdout
    assert not any(p in preview for p in passwords)


def test_refresh_notices_a_stopped_server_and_up_starts_it(stack: ThrowawayStack) -> None:
    data_dir = stack.state_dir / "primary"
    port = stack.outputs()["primary_dsn"].rsplit(":", 1)[1].split("/")[0]
    server = pgctl.Server(data_dir, int(port))
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
