"""Renaming the database and its owner, and moving state_dir, through `pulumi up`.

Each is done in place, every row kept. One throw-away local stack; each test
counts rows before and after. The database rename keeps the tenants, their
rows and the schema engine's history (nothing is re-applied) and the DSN
outputs follow; the owner rename keeps what the owner owns, and the new name
logs in with a SCRAM verifier; a new state_dir moves the cluster (same system
identifier) and the backup repository (the first full backup is still there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests import ports
from tests.engine import ThrowawayStack, stack_up

pytestmark = pytest.mark.engine

TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "free"}]
ROWS = 5000
STATEFUL = ("local:Primary:", "local:Database:", "local:Backup:")


def _settings(*, state_dir: str | None = None, **postgres: Any) -> dict[str, Any]:
    extra = {"state_dir": state_dir} if state_dir else {}
    return {"postgres": {"port": PORT, **postgres}, "tenants": TENANTS,
            "monitoring": {"exporters": False}, **extra}


PORT = ports.stack_port()


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    with stack_up("renames", _settings()) as s:
        with psycopg.connect(s.outputs()["primary_dsn"], autocommit=True) as conn:
            conn.execute("CREATE TABLE public.keepme (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO public.keepme SELECT g, md5(g::text) "
                         "FROM generate_series(1, %s) g", (ROWS,))
            conn.execute("INSERT INTO tenant_acme.users (email) "
                         "SELECT 'u' || g || '@acme.test' FROM generate_series(1, 50) g")
        yield s


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        def one(query: str) -> int:
            row = conn.execute(query).fetchone()
            assert row is not None
            return int(row[0])
        return {"keepme": one("SELECT count(*) FROM public.keepme"),
                "tenants": one("SELECT count(*) FROM public.tenants"),
                "acme users": one("SELECT count(*) FROM tenant_acme.users"),
                "history": one("SELECT count(*) FROM pgplatform.schema_history")}


def _change(stack: ThrowawayStack, settings: dict[str, Any]) -> str:
    """Preview (which must plan no replace or delete), then up; the preview's text."""
    stack.set_config(settings)
    preview = stack.preview()
    text = preview.stdout
    steps = [ln.strip() for ln in text.splitlines() if ln.strip().endswith(")")
             and "pulumi-python:dynamic/" in ln]
    # What holds data is updated in place; the pooler, which holds none, may be made anew
    # at a new path, and a renamed role gets a new password resource (named after it).
    assert not [s for s in steps if any(k in s for k in STATEFUL)
                and ("replace" in s or "delete" in s)], steps
    assert all(s.endswith("(update)") for s in steps if any(k in s for k in STATEFUL)), steps
    assert all("secrets:Password" in s for s in steps if s.endswith("(delete)")), steps
    stack.up()
    assert stack.preview("--expect-no-changes", check=False).returncode == 0
    return text


def test_renaming_the_database_keeps_every_row(stack: ThrowawayStack) -> None:
    before = counts(stack.outputs()["primary_dsn"])
    assert before["keepme"] == ROWS and before["tenants"] == 2 and before["acme users"] == 50
    _change(stack, _settings(database="renamed_db"))
    out = stack.outputs()
    for name in ("primary_dsn", "app_dsn", "pooler_dsn"):
        assert conninfo_to_dict(out[name])["dbname"] == "renamed_db", name
    assert counts(out["primary_dsn"]) == before  # history too: nothing was re-applied
    with psycopg.connect(out["superuser_dsn"]) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert "renamed_db" in names and "platform" not in names
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("renamed_db",)


def test_renaming_the_owner_keeps_every_row_and_logs_in(stack: ThrowawayStack) -> None:
    before = counts(stack.outputs()["primary_dsn"])
    _change(stack, _settings(database="renamed_db", owner_role="owner_renamed"))
    out = stack.outputs()
    assert conninfo_to_dict(out["primary_dsn"])["user"] == "owner_renamed"
    assert counts(out["primary_dsn"]) == before
    with psycopg.connect(out["primary_dsn"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("owner_renamed",)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'keepme'")
        assert owner.fetchone() == ("owner_renamed",)
    with psycopg.connect(out["superuser_dsn"]) as conn:
        rows = conn.execute("SELECT rolname, left(rolpassword, 14) FROM pg_authid "
                            "WHERE rolname IN ('platform_owner', 'owner_renamed')").fetchall()
    assert rows == [("owner_renamed", "SCRAM-SHA-256$")]


def test_moving_state_dir_moves_the_cluster_and_the_backups(stack: ThrowawayStack) -> None:
    names = {"database": "renamed_db", "owner_role": "owner_renamed"}
    out = stack.outputs()
    before = counts(out["primary_dsn"])
    with psycopg.connect(out["superuser_dsn"]) as conn:
        ident = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    old, new = stack.state_dir, stack.base / "moved" / "state"
    backups_before = sorted(p.name for p in (old / "backups" / "repo" / "backup").rglob("*F"))
    assert backups_before, "the first full backup is missing before the move"
    _change(stack, _settings(state_dir=str(new), **names))
    out = stack.outputs()
    assert counts(out["primary_dsn"]) == before
    with psycopg.connect(out["superuser_dsn"]) as conn:
        assert conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone() \
            == ident  # the same cluster, not a new one
        assert conn.execute("SHOW data_directory").fetchone() == (str(new / "primary"),)
    assert not (old / "primary").exists()
    moved = sorted(p.name for p in (new / "backups" / "repo" / "backup").rglob("*F"))
    assert moved == backups_before
    with psycopg.connect(out["pooler_dsn"], prepare_threshold=None) as conn:
        # PgBouncer, made anew under the new folder, reaches the moved primary.
        assert conn.execute("SELECT current_database()").fetchone() == ("renamed_db",)


def test_a_state_dir_that_holds_files_is_refused_in_preview(stack: ThrowawayStack) -> None:
    names = {"database": "renamed_db", "owner_role": "owner_renamed"}
    occupied = stack.base / "occupied"
    (occupied / "primary").mkdir(parents=True)
    (occupied / "primary" / "PG_VERSION").write_text("15\n")
    stack.set_config(_settings(state_dir=str(occupied), **names))
    proc = stack.preview(check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pg-platform:state_dir: moving the primary's data directory" in text, text[-2000:]
    assert "already holds files" in text and "Traceback" not in text
    stack.set_config(_settings(state_dir=str(stack.base / "moved" / "state"), **names))
    assert stack.preview("--expect-no-changes", check=False).returncode == 0
