"""The SECURITY DEFINER lint: unsafe functions are refused with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import MigrationError
from infra.schema import definer_lint as lint

ROOT = Path(__file__).resolve().parents[2]

UNSAFE = [
    "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ select 1 $$",
    "CREATE OR REPLACE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER\n"
    "    SET search_path = pg_catalog, public AS $$ select 1 $$",
    "CREATE FUNCTION f() RETURNS int SECURITY DEFINER SET search_path = pg_temp, pg_catalog "
    "LANGUAGE sql AS 'select 1'",
    "CREATE PROCEDURE p() SECURITY DEFINER SET search_path FROM CURRENT LANGUAGE sql "
    "AS 'select 1'",
    "ALTER FUNCTION public.g(int) SECURITY DEFINER",
    "DO $$ BEGIN EXECUTE $q$CREATE FUNCTION h() RETURNS int LANGUAGE sql\n"
    "  SECURITY DEFINER AS 'select 1'$q$; END $$",
]
SAFE = [
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER "
    "SET search_path = pg_catalog, pg_temp AS $$ select 1 $$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER SET search_path = '' "
    "AS $$ select 1 $$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER "
    "SET search_path TO 'pg_catalog', 'pg_temp' AS $$ select 1 $$",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ -- SECURITY DEFINER in a comment\n"
    "select 1 $$",
]


@pytest.mark.parametrize("stmt", UNSAFE)
def test_unsafe_definer_is_refused_with_file_and_line(stmt: str) -> None:
    text = "-- header\n\n" + stmt + ";\n"
    with pytest.raises(MigrationError) as err:
        lint.refuse([("sql/schema/V0009__x.sql", text)])
    assert "sql/schema/V0009__x.sql:3:" in str(err.value)


@pytest.mark.parametrize("stmt", SAFE)
def test_safe_definer_passes(stmt: str) -> None:
    assert lint.lint_files([("a.sql", stmt + ";")]) == []


def test_later_safe_redefinition_supersedes_an_applied_unsafe_one() -> None:
    old = ("V1.sql", UNSAFE[0] + ";")
    assert lint.lint_files([old, ("V2.sql", "ALTER FUNCTION public.f() "
                                            "SET search_path = pg_catalog, pg_temp;")]) == []
    assert lint.lint_files([old, ("V2.sql", "DROP FUNCTION public.f();")]) == []
    assert lint.lint_files([old]) != []


def test_project_sql_passes_the_lint() -> None:
    assert lint.lint_files(lint.sql_files(ROOT / "sql")) == []


def test_project_sql_without_v0005_fails_on_v0003() -> None:
    files = [f for f in lint.sql_files(ROOT / "sql") if "V0005" not in f[0]]
    found = {(Path(f.path).name, f.line) for f in lint.lint_files(files)}
    assert ("V0003__tenant_registry.sql", 45) in found
    assert ("V0003__tenant_registry.sql", 63) in found
