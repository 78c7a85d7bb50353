"""The engine against a real PostgreSQL, with small SQL trees written per test.

Covers ordering, repeatables, rollback with file and line, tampering and
repair, non-transactional CREATE INDEX CONCURRENTLY, and two concurrent
appliers (separate processes) applying each migration exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from infra.errors import ChecksumMismatch, MigrationError
from infra.schema import engine
from tests.support import FreshDatabase

ROOT = Path(__file__).resolve().parents[2]

REGISTRY = """
CREATE TABLE public.tenants (
    slug text PRIMARY KEY CHECK (slug ~ '^[a-z][a-z0-9_]{0,49}$'),
    name text NOT NULL,
    subscription_plan text NOT NULL,
    schema_name text GENERATED ALWAYS AS ('tenant_' || slug) STORED,
    is_active boolean NOT NULL DEFAULT true
);
CREATE FUNCTION public.create_tenant(p_slug text, p_name text, p_plan text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.tenants (slug, name, subscription_plan) VALUES (p_slug, p_name, p_plan)
    ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name,
        subscription_plan = EXCLUDED.subscription_plan
$$;
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def opts(sql_dir: Path, **kw: object) -> engine.Options:
    return engine.Options.build(sql_dir, **kw)  # type: ignore[arg-type]


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def history(dsn: str) -> list[tuple[object, ...]]:
    return rows(dsn, "SELECT track, coalesce(tenant_schema, ''), version, script "
                     "FROM pgplatform.schema_history ORDER BY installed_rank")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.schema", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_order_versions_then_repeatables_then_tracks(fresh_db: FreshDatabase,
                                                     tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__log.sql", REGISTRY + "CREATE TABLE log (n serial, v text);")
    for name in ("V10__ten", "V2__two", "V1_5__one_five", "R__b", "R__a"):
        write(tmp_path, f"schema/{name}.sql", f"INSERT INTO log (v) VALUES ('{name}');")
    write(tmp_path, "tenant/V1__t.sql", "INSERT INTO log (v) VALUES (${tenant_slug:literal});")
    write(tmp_path, "policies/R__p.sql", "INSERT INTO log (v) VALUES ('policy');")

    result = engine.apply(fresh_db.dsn, opts(tmp_path, tenant_list=[{"slug": "acme"}]))

    logged = [r[0] for r in rows(fresh_db.dsn, "SELECT v FROM log ORDER BY n")]
    assert logged == ["V1_5__one_five", "V2__two", "V10__ten", "R__a", "R__b", "acme", "policy"]
    assert result.applied[0] == "schema/V1__log.sql"
    assert result.tenants_created == ["tenant_acme"]
    assert [h[2] for h in history(fresh_db.dsn)][:4] == ["1", "1.5", "2", "10"]
    again = engine.apply(fresh_db.dsn, opts(tmp_path, tenant_list=[{"slug": "acme"}]))
    assert not again.changed

    status = cli("status", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path),
                 "--tenant", "acme", "--detailed-exitcode")
    assert status.returncode == 0, status.stderr
    assert "applied 1/1 tenants" in status.stdout and "up to date" in status.stdout


def test_repeatables_rerun_only_when_content_changes(fresh_db: FreshDatabase,
                                                     tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__log.sql", "CREATE TABLE runs (v text);")
    rep = write(tmp_path, "policies/R__count.sql", "INSERT INTO runs VALUES ('a');")
    o = opts(tmp_path)
    engine.apply(fresh_db.dsn, o)
    engine.apply(fresh_db.dsn, o)
    rep.write_text("INSERT INTO runs VALUES ('a');   \r\n\r\n")  # formatting only
    assert engine.plan(fresh_db.dsn, o).is_noop
    engine.apply(fresh_db.dsn, o)
    assert rows(fresh_db.dsn, "SELECT v FROM runs") == [("a",)]

    rep.write_text("INSERT INTO runs VALUES ('b');")
    assert [m.ref for m in engine.plan(fresh_db.dsn, o).policies_pending] == \
        ["policies/R__count.sql"]
    engine.apply(fresh_db.dsn, o)
    assert rows(fresh_db.dsn, "SELECT v FROM runs ORDER BY v") == [("a",), ("b",)]


def test_failure_rolls_back_and_names_file_and_line(fresh_db: FreshDatabase,
                                                    tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__ok.sql", "CREATE TABLE ok (id int);")
    write(tmp_path, "schema/V2__bad.sql",
          "-- a comment\nCREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\n"
          "SELECT id,\n       1 / 0\nFROM half;\n")
    with pytest.raises(MigrationError) as err:
        engine.apply(fresh_db.dsn, opts(tmp_path))
    msg = str(err.value)
    assert "schema/V2__bad.sql:4:" in msg and "division by zero" in msg
    assert "rolled back; nothing was recorded" in msg
    assert rows(fresh_db.dsn, "SELECT to_regclass('half')") == [(None,)]
    assert [h[2] for h in history(fresh_db.dsn)] == ["1"]

    # A syntax error points at the line inside the statement, via the CLI.
    write(tmp_path, "schema/V2__bad.sql",
          "CREATE TABLE half (id int);\nSELECT 1,\n  2\n  FORM half;\n")
    proc = cli("apply", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path))
    # Found by PostgreSQL's grammar before anything runs: refused (1), not failed (2).
    assert proc.returncode == 1
    assert "schema/V2__bad.sql:4:" in proc.stderr and "syntax error" in proc.stderr
    password = str(conninfo_to_dict(fresh_db.dsn)["password"])
    assert password and password not in proc.stderr + proc.stdout  # no credentials


def test_tampered_file_is_refused_until_repaired(fresh_db: FreshDatabase,
                                                 tmp_path: Path) -> None:
    v1 = write(tmp_path, "schema/V1__t.sql", "CREATE TABLE t (id int);\n")
    o = opts(tmp_path)
    engine.apply(fresh_db.dsn, o)
    old = engine.load(o).schema[0].checksum
    v1.write_text("CREATE TABLE t (id int);  \r\n")  # whitespace is not tampering
    engine.validate(fresh_db.dsn, o)

    v1.write_text("CREATE TABLE t (id bigint);\n")
    write(tmp_path, "schema/V2__next.sql", "CREATE TABLE next (id int);")
    new = engine.load(o).schema[0].checksum
    for verb in (engine.apply, engine.validate):
        with pytest.raises(ChecksumMismatch) as err:
            verb(fresh_db.dsn, o)
        assert old in str(err.value) and new in str(err.value)
        assert "schema/V1__t.sql" in str(err.value)
    assert rows(fresh_db.dsn, "SELECT to_regclass('next')") == [(None,)]
    proc = cli("validate", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path))
    assert proc.returncode == 1 and "edited after it was applied" in proc.stderr

    done = engine.repair(fresh_db.dsn, o)
    assert len(done) == 1 and new in done[0]
    engine.validate(fresh_db.dsn, o)
    assert engine.apply(fresh_db.dsn, o).applied == ["schema/V2__next.sql"]


def test_nontransactional_create_index_concurrently(fresh_db: FreshDatabase,
                                                    tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__t.sql",
          "CREATE TABLE big (id int);\nINSERT INTO big SELECT generate_series(1, 1000);")
    write(tmp_path, "schema/V2__idx.sql",
          "-- pg-platform: nontransactional\nCREATE INDEX CONCURRENTLY big_id ON big (id);\n")
    engine.apply(fresh_db.dsn, opts(tmp_path))
    assert rows(fresh_db.dsn, "SELECT indisvalid FROM pg_index "
                              "WHERE indexrelid = 'big_id'::regclass") == [(True,)]

    # Without the marker PostgreSQL refuses, and the message says where.
    write(tmp_path, "schema/V3__idx2.sql", "CREATE INDEX CONCURRENTLY big_id2 ON big (id);")
    with pytest.raises(MigrationError, match=r"V3__idx2\.sql:1: .*transaction block"):
        engine.apply(fresh_db.dsn, opts(tmp_path))


def test_two_concurrent_appliers_apply_each_migration_once(fresh_db: FreshDatabase,
                                                           tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__log.sql", REGISTRY + "CREATE TABLE log (v text);")
    write(tmp_path, "schema/V2__slow.sql", "SELECT pg_sleep(0.6);\nINSERT INTO log VALUES ('V2');")
    # A concurrent index build while the other process waits for the lock: it
    # would hang if the waiter sat in a blocking lock call holding a snapshot.
    write(tmp_path, "schema/V3__cic.sql",
          "-- pg-platform: nontransactional\nCREATE INDEX CONCURRENTLY log_v ON log (v);")
    write(tmp_path, "schema/V4__after.sql", "INSERT INTO log VALUES ('V4');")
    write(tmp_path, "tenant/V1__t.sql",
          "CREATE TABLE ${tenant_schema}.t (id int);\n"
          "INSERT INTO log VALUES (${tenant_slug:literal});")
    args = ["apply", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path), "--workers", "2",
            *(a for s in ("a", "b", "c") for a in ("--tenant", s))]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "infra.schema", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(r[0] for r in rows(fresh_db.dsn, "SELECT v FROM log")) == \
        ["V2", "V4", "a", "b", "c"]
    h = history(fresh_db.dsn)
    assert len(h) == len(set(h)) == 4 + 3
    assert rows(fresh_db.dsn, "SELECT indisvalid FROM pg_index "
                              "WHERE indexrelid = 'log_v'::regclass") == [(True,)]


def test_tampered_tenant_file_names_each_schema_and_repair_realigns(
        fresh_db: FreshDatabase, tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__registry.sql", REGISTRY)
    t1 = write(tmp_path, "tenant/V1__t.sql", "CREATE TABLE ${tenant_schema}.t (id int);")
    o = opts(tmp_path, tenant_list=[{"slug": "a"}, {"slug": "b"}])
    engine.apply(fresh_db.dsn, o)
    t1.write_text("CREATE TABLE ${tenant_schema}.t (id bigint);")
    with pytest.raises(ChecksumMismatch) as err:
        engine.apply(fresh_db.dsn, o)
    assert "tenant schema tenant_a" in str(err.value)
    assert "tenant schema tenant_b" in str(err.value)
    assert engine.repair(fresh_db.dsn, o) == [
        f"tenant/V1__t.sql: recorded checksum set to {engine.load(o).tenant[0].checksum} "
        "(2 history row(s))"]
    engine.validate(fresh_db.dsn, o)
