"""The engine on SQL nobody here wrote: each defect of issue #14, reproduced by a file.

Real PostgreSQL throughout (the session server of tests/conftest.py); the dump
is made by the server's own ``pg_dump`` from a database built in the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from infra import hostctl
from infra.errors import MigrationError, MigrationRefused
from infra.health import probes
from infra.schema import engine
from tests.integration.test_schema_engine import REGISTRY, cli, history, opts, rows, write
from tests.support import FreshDatabase, RunningServer, fresh_database

ROOT = Path(__file__).resolve().parents[2]

# Data pg_dump must escape in COPY text format, and text that looks like a placeholder.
TRICKY = ["it's", 'say "hi"', "tab\there", "back\\slash", "two\nlines", "${app_role}",
          "ends with tab\t", "\\.", "semi; colon", "€ unicode"]

SOURCE = """
CREATE SCHEMA "sch€ma";
CREATE TABLE "sch€ma".notes (id int PRIMARY KEY, body text, note text);
CREATE TABLE audit (n int, what text);
CREATE FUNCTION "sch€ma".add_one(i int) RETURNS int LANGUAGE sql
    BEGIN ATOMIC SELECT i + 1; END;
CREATE RULE notes_audit AS ON INSERT TO "sch€ma".notes
    DO ALSO (INSERT INTO audit VALUES (NEW.id, 'insert');
             INSERT INTO audit VALUES (NEW.id, 'again'));
"""


def pg_dump(running: RunningServer, dbname: str, workdir: Path) -> str:
    """Plain-format pg_dump, as users feed it to psql; the password goes in a 0600 passfile."""
    passfile = workdir / "pgpass"
    passfile.write_text(f"*:*:*:*:{running.password}\n")
    passfile.chmod(0o600)
    try:
        proc = subprocess.run(
            [str(hostctl.bin_dir() / "pg_dump"), "-h", running.server.host,
             "-p", str(running.server.port), "-U", "pgp_admin", "--no-owner", dbname],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "PGPASSFILE": str(passfile)})
    finally:
        passfile.unlink()
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_real_pg_dump_with_copy_data_applies_like_psql(pg_server: RunningServer,
                                                         fresh_db: FreshDatabase,
                                                         tmp_path: Path) -> None:
    with fresh_database(pg_server) as source:
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            conn.execute(SOURCE)
            with conn.cursor() as cur:
                cur.executemany('INSERT INTO "sch€ma".notes VALUES (%s, %s, %s)',
                                [(i, t, None if i % 3 else t[::-1]) for i, t in enumerate(TRICKY)])
        dump = pg_dump(pg_server, source.name, tmp_path)
    assert "COPY \"sch€ma\".notes" in dump and "BEGIN ATOMIC" in dump
    assert "DO ( INSERT INTO" in dump  # a multi-action rule, semicolons inside
    write(tmp_path, "sql/schema/V1__dump.sql", dump)
    # pg_dump leaves search_path empty for the session; the next file must not inherit it.
    write(tmp_path, "sql/schema/V2__after.sql", "CREATE TABLE lands_in_public (id int);")
    result = engine.apply(fresh_db.dsn, opts(tmp_path / "sql"))
    assert result.applied == ["schema/V1__dump.sql", "schema/V2__after.sql"]

    got = rows(fresh_db.dsn, 'SELECT id, body, note FROM "sch€ma".notes ORDER BY id')
    assert got == [(i, t, None if i % 3 else t[::-1]) for i, t in enumerate(TRICKY)]
    assert rows(fresh_db.dsn, 'SELECT "sch€ma".add_one(41)') == [(42,)]
    assert rows(fresh_db.dsn, "SELECT to_regclass('public.lands_in_public') IS NOT NULL") == \
        [(True,)]
    # The rule came through with both actions.
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("""INSERT INTO "sch€ma".notes VALUES (100, 'x', 'y')""")
    assert rows(fresh_db.dsn, "SELECT what FROM audit WHERE n = 100 ORDER BY what") == \
        [("again",), ("insert",)]
    assert engine.plan(fresh_db.dsn, opts(tmp_path / "sql")).is_noop


def test_begin_atomic_and_multi_action_rule_keep_file_lines(fresh_db: FreshDatabase,
                                                            tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__bodies.sql", """CREATE TABLE t (id int);
CREATE TABLE log (v text);
CREATE FUNCTION twice(i int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT i * 2;
END;
CREATE RULE t_log AS ON INSERT TO t DO ALSO (
    INSERT INTO log VALUES ('a');
    INSERT INTO log VALUES ('b')
);
INSERT INTO t VALUES (twice(2));
SELECT 1 / 0;
""")
    with pytest.raises(MigrationError, match=r"schema/V1__bodies\.sql:12: .*division by zero"):
        engine.apply(fresh_db.dsn, opts(tmp_path))
    (tmp_path / "schema/V1__bodies.sql").write_text(
        (tmp_path / "schema/V1__bodies.sql").read_text().replace("SELECT 1 / 0;\n", ""))
    engine.apply(fresh_db.dsn, opts(tmp_path))
    assert rows(fresh_db.dsn, "SELECT id FROM t") == [(4,)]
    assert rows(fresh_db.dsn, "SELECT v FROM log ORDER BY v") == [("a",), ("b",)]


def test_a_file_with_a_bom_runs(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    path = tmp_path / "schema" / "V1__bom.sql"
    path.parent.mkdir(parents=True)
    path.write_bytes("\ufeffSET lock_timeout = '5s';\r\nCREATE TABLE bom (id int);\r\n"
                     .encode())
    engine.apply(fresh_db.dsn, opts(tmp_path))
    assert rows(fresh_db.dsn, "SELECT to_regclass('bom') IS NOT NULL") == [(True,)]
    path.write_bytes(b"SET lock_timeout = '5s';\nCREATE TABLE bom (id int);\n")
    assert engine.plan(fresh_db.dsn, opts(tmp_path)).is_noop  # same checksum without it


def test_session_state_does_not_leak_to_the_next_file(fresh_db: FreshDatabase,
                                                      tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__registry.sql", REGISTRY + "CREATE SCHEMA elsewhere;")
    write(tmp_path, "schema/V2__leak.sql",
          "SET search_path TO elsewhere;\n"
          "SELECT set_config('pgp.leak', 'yes', false);\n"
          "SET statement_timeout = '1ms';\n")
    write(tmp_path, "schema/V3__table.sql",
          "CREATE TABLE landed (leak text DEFAULT current_setting('pgp.leak', true));\n"
          "INSERT INTO landed DEFAULT VALUES;\nSELECT pg_sleep(0.05);\n")
    write(tmp_path, "tenant/V1__t.sql",
          "SET search_path TO elsewhere;\nCREATE TABLE ${tenant_schema}.tenant_table (id int);")
    write(tmp_path, "tenant/V2__t.sql", "CREATE TABLE second_table (id int);")
    engine.apply(fresh_db.dsn, opts(tmp_path, tenant_list=[{"slug": "a"}, {"slug": "b"}],
                                    workers=1))
    # RESET ALL: the custom setting is back to its reset value, the empty string.
    assert rows(fresh_db.dsn, "SELECT leak FROM public.landed") == [("",)]
    assert rows(fresh_db.dsn, "SELECT to_regclass('elsewhere.landed')") == [(None,)]
    tables = rows(fresh_db.dsn, "SELECT table_schema, table_name FROM information_schema.tables "
                                "WHERE table_name IN ('tenant_table', 'second_table') "
                                "ORDER BY 1, 2")
    assert tables == [("tenant_a", "second_table"), ("tenant_a", "tenant_table"),
                      ("tenant_b", "second_table"), ("tenant_b", "tenant_table")]


def test_set_role_in_a_file_is_undone_before_recording(fresh_db: FreshDatabase,
                                                       tmp_path: Path) -> None:
    role = f"{fresh_db.name}_r"
    write(tmp_path, "schema/V1__role.sql",
          f"CREATE ROLE {role} NOLOGIN;\nGRANT CREATE ON SCHEMA public TO {role};\n"
          f"SET ROLE {role};\nCREATE TABLE owned_by_role (id int);\n")
    write(tmp_path, "schema/V2__next.sql", "CREATE TABLE owned_by_engine (id int);")
    try:
        engine.apply(fresh_db.dsn, opts(tmp_path))
        owners = rows(fresh_db.dsn, "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
                                    "WHERE relname LIKE 'owned_by_%' ORDER BY 1")
        assert owners == [("owned_by_engine", "pgp_admin"), ("owned_by_role", role)]
        assert [h[3] for h in history(fresh_db.dsn)] == ["V1__role.sql", "V2__next.sql"]
        assert rows(fresh_db.dsn, "SELECT DISTINCT applied_by FROM pgplatform.schema_history") \
            == [("pgp_admin",)]
    finally:
        with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")


def test_commit_in_a_transactional_file_is_refused_before_it_runs(fresh_db: FreshDatabase,
                                                                  tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__commit.sql",
          "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);\n")
    with pytest.raises(MigrationRefused, match=r"schema/V1__commit\.sql:2: COMMIT at top level"):
        engine.apply(fresh_db.dsn, opts(tmp_path))
    assert rows(fresh_db.dsn, "SELECT to_regclass('a')") == [(None,)]
    proc = cli("apply", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path))
    assert proc.returncode == 1 and "V1__commit.sql:2: COMMIT" in proc.stderr
    offline = cli("validate", "--sql-dir", str(tmp_path))
    assert offline.returncode == 1 and "V1__commit.sql:2: COMMIT" in offline.stderr

    # Savepoints stay inside the file's transaction, so they are fine; and a
    # file marked non-transactional may manage its own transactions.
    write(tmp_path, "schema/V1__commit.sql",
          "-- pg-platform: nontransactional\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n")
    write(tmp_path, "schema/V2__savepoint.sql",
          "CREATE TABLE c (id int);\nSAVEPOINT s;\nCREATE TABLE d (id int);\n"
          "ROLLBACK TO SAVEPOINT s;\n")
    engine.apply(fresh_db.dsn, opts(tmp_path))
    assert rows(fresh_db.dsn, "SELECT to_regclass('a') IS NOT NULL, to_regclass('c') IS NOT NULL,"
                              " to_regclass('d') IS NULL") == [(True, True, True)]


def test_a_failed_history_row_is_an_error_that_names_the_file(fresh_db: FreshDatabase,
                                                              tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__ok.sql", "CREATE TABLE ok (id int);")
    engine.apply(fresh_db.dsn, opts(tmp_path))
    write(tmp_path, "schema/V2__trap.sql", """CREATE TABLE trapped (id int);
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'history is read-only today'; END $$;
CREATE TRIGGER refuse BEFORE INSERT ON pgplatform.schema_history
    FOR EACH ROW EXECUTE FUNCTION refuse();
""")
    proc = cli("apply", "--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "schema/V2__trap.sql: its statements ran, but recording it" in proc.stderr
    assert "history is read-only today" in proc.stderr and "Traceback" not in proc.stderr
    assert rows(fresh_db.dsn, "SELECT to_regclass('trapped')") == [(None,)]  # rolled back


def test_placeholders_only_where_meant(fresh_db: FreshDatabase, tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__ph.sql", """-- ${app_role} in a comment stays a comment
CREATE TABLE texts (n int, v text);
INSERT INTO texts VALUES (1, '${app_role}'), (2, E'\\'${app_role}'), (3, $x$${app_role}$x$);
CREATE FUNCTION role_name() RETURNS text LANGUAGE sql AS $f$
    SELECT ${app_role:literal} || ' ${app_role}' || ' $${app_role:literal}'
$f$;
DO $do$ BEGIN
    EXECUTE format('CREATE TABLE %I (id int)', ${app_role:literal} || '_t');
    CREATE TABLE ${app_role} (id int);
    INSERT INTO texts VALUES (4, '${app_role}'), (5, '$${app_role}');
END $do$;
INSERT INTO texts VALUES (6, (SELECT ${app_role:literal}));
""")
    write(tmp_path, "schema/V2__off.sql",
          "-- pg-platform: no-placeholders\nINSERT INTO texts VALUES (7, $$${app_role}$$);\n")
    engine.apply(fresh_db.dsn, opts(tmp_path, app_role="myapp"))
    assert rows(fresh_db.dsn, "SELECT n, v FROM texts ORDER BY n") == [
        (1, "${app_role}"), (2, "'${app_role}"), (3, "${app_role}"), (4, "${app_role}"),
        (5, "$${app_role}"), (6, "myapp"), (7, "${app_role}")]
    assert rows(fresh_db.dsn, "SELECT role_name()") == [("myapp ${app_role} ${app_role:literal}",)]
    assert rows(fresh_db.dsn, "SELECT to_regclass('myapp_t') IS NOT NULL, "
                              "to_regclass('myapp') IS NOT NULL") == [(True, True)]


def test_v1_and_v1_0_are_one_version_and_refused_naming_both(fresh_db: FreshDatabase,
                                                             tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__first.sql", "CREATE TABLE one (id int);")
    write(tmp_path, "schema/V1.0__again.sql", "CREATE TABLE again (id int);")
    for args in (("apply", "--dsn", fresh_db.dsn), ("validate",)):
        proc = cli(*args, "--sql-dir", str(tmp_path))
        assert proc.returncode == 1, proc.stderr
        assert "schema/V1.0__again.sql and schema/V1__first.sql both have version 1" \
            in proc.stderr
    assert rows(fresh_db.dsn, "SELECT to_regclass('one')") == [(None,)]


def test_a_dropped_tenant_schema_is_counted_and_recreated(fresh_db: FreshDatabase,
                                                          tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__registry.sql", REGISTRY)
    write(tmp_path, "tenant/V1__t.sql", "CREATE TABLE ${tenant_schema}.t (id int);")
    write(tmp_path, "tenant/V2__u.sql", "INSERT INTO t VALUES (1);")
    tenants = [{"slug": "a"}, {"slug": "b"}]
    o = opts(tmp_path, tenant_list=tenants)
    engine.apply(fresh_db.dsn, o)
    args = ["--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path), "--tenant", "a", "--tenant", "b"]
    assert cli("status", *args).returncode == 0
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA tenant_b CASCADE")

    p = engine.plan(fresh_db.dsn, o)
    assert [w.schema for w in p.missing_schemas] == ["tenant_b"]
    status = cli("status", *args)
    assert status.returncode == 1 and "pending in 1/2 tenants" in status.stdout
    assert "recreate missing tenant schema tenant_b" in cli("plan", *args).stdout
    health = probes.probe_schema(fresh_db.dsn, tmp_path, tenants, "app")
    assert health.pending and "pending in 1/2 tenants" in health.pending[0]

    result = engine.apply(fresh_db.dsn, o)
    assert result.tenants_created == ["tenant_b"]
    assert rows(fresh_db.dsn, "SELECT id FROM tenant_b.t") == [(1,)]
    assert cli("status", *args).returncode == 0
    assert sorted(h for h in history(fresh_db.dsn) if h[0] == "tenant") == [
        ("tenant", "tenant_a", "1", "V1__t.sql"), ("tenant", "tenant_a", "2", "V2__u.sql"),
        ("tenant", "tenant_b", "1", "V1__t.sql"), ("tenant", "tenant_b", "2", "V2__u.sql")]


def test_exit_codes_mean_the_same_for_every_command(fresh_db: FreshDatabase,
                                                    tmp_path: Path) -> None:
    v1 = write(tmp_path, "schema/V1__t.sql", "CREATE TABLE t (v text);\n")
    args = ["--dsn", fresh_db.dsn, "--sql-dir", str(tmp_path)]
    assert [cli(c, *args).returncode for c in ("status", "plan")] == [1, 1]  # pending
    assert cli("validate", *args).returncode == 0  # valid, even with a file pending
    assert cli("apply", *args).returncode == 0
    assert [cli(c, *args).returncode for c in ("status", "plan", "validate")] == [0, 0, 0]
    v1.write_text("CREATE TABLE t (v varchar);\n")
    codes = {c: cli(c, *args) for c in ("status", "plan", "validate", "apply")}
    assert {c: p.returncode for c, p in codes.items()} == \
        {"status": 1, "plan": 1, "validate": 1, "apply": 1}
    assert "refused" in codes["status"].stdout and "edited after" in codes["status"].stderr
    v1.unlink()  # a vanished applied file: status must not say "up to date"
    gone = cli("status", *args)
    assert gone.returncode == 1 and "up to date" not in gone.stdout
    assert "its file is missing" in gone.stderr
    unreachable = "postgresql://nobody:x@127.0.0.1:1/none"
    for c in ("status", "plan", "validate", "apply"):
        proc = cli(c, "--dsn", unreachable, "--sql-dir", str(tmp_path))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (c, proc.stderr)


def test_validate_finds_a_syntax_error_without_a_database(tmp_path: Path) -> None:
    write(tmp_path, "schema/V1__ok.sql", "CREATE TABLE t (id int);\n")
    write(tmp_path, "schema/V2__typo.sql", "CREATE TABLE u (id int);\n\nSELECT 1,\n  2\n"
                                           "  FORM u;\n")
    proc = cli("validate", "--sql-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "schema/V2__typo.sql:5: syntax error" in proc.stderr and 'near "u"' in proc.stderr
    (tmp_path / "schema/V2__typo.sql").write_text("CREATE TABLE u (id int);\n")
    ok = cli("validate", "--sql-dir", str(tmp_path))
    assert ok.returncode == 0 and "files only" in ok.stdout


def _old_engine(tmp_path: Path) -> Path:
    """The engine as it was before this change (commit 184922a), from git."""
    dest = tmp_path / "old-engine"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "184922a", "infra"],
                             capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return dest


def test_files_applied_by_the_previous_engine_are_not_seen_as_edited(
        fresh_db: FreshDatabase, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    # Trailing whitespace inside a literal: the old checksum ignored it, the new one counts it.
    write(sql_dir, "schema/V1__registry.sql", REGISTRY)
    write(sql_dir, "schema/V2__data.sql", "CREATE TABLE d (v text);\n"
                                          "INSERT INTO d VALUES ('a   \nb');   \n")
    write(sql_dir, "tenant/V1__t.sql", "CREATE TABLE ${tenant_schema}.t (v text DEFAULT 'x  \n');")
    old_root = _old_engine(tmp_path)
    old = subprocess.run([sys.executable, "-m", "infra.schema", "apply", "--dsn", fresh_db.dsn,
                          "--sql-dir", str(sql_dir), "--tenant", "a"],
                         cwd=old_root, capture_output=True, text=True, timeout=120,
                         check=False, env={**os.environ, "PYTHONPATH": str(old_root)})
    assert old.returncode == 0, old.stderr
    o = opts(sql_dir, tenant_list=[{"slug": "a"}])
    p = engine.plan(fresh_db.dsn, o)
    assert p.problems() == [] and p.engine_version == 1
    assert p.engine_pending and not p.schema_pending and not p.tenant_work
    result = engine.apply(fresh_db.dsn, o)
    assert result.engine_versions == [2] and result.applied == []
    assert engine.plan(fresh_db.dsn, o).is_noop
    engine.validate(fresh_db.dsn, o)
    # Rows the new engine writes use the new rule: a change inside a literal is caught.
    write(sql_dir, "schema/V3__more.sql", "INSERT INTO d VALUES ('c\n');\n")
    engine.apply(fresh_db.dsn, o)
    write(sql_dir, "schema/V3__more.sql", "INSERT INTO d VALUES ('c  \n');\n")
    with pytest.raises(MigrationRefused, match=r"schema/V3__more\.sql was edited"):
        engine.validate(fresh_db.dsn, o)
