"""File names, directives, checksums and the splitter: the rules users learn."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import MigrationError
from infra.schema import sqltext
from infra.schema.files import (
    Kind,
    MigrationSet,
    Track,
    canonical_version,
    checksum,
    directives,
    load_track,
    normalise,
    parse_name,
)


@pytest.mark.parametrize(("name", "expected"), [
    ("V1__init.sql", (Kind.VERSIONED, "1", "init")),
    ("V0001__tenant_registry.sql", (Kind.VERSIONED, "1", "tenant registry")),
    ("V1_2__add_index.sql", (Kind.VERSIONED, "1.2", "add index")),
    ("V1.10__x.sql", (Kind.VERSIONED, "1.10", "x")),
    ("R__rls.sql", (Kind.REPEATABLE, "", "rls")),
    ("README.md", None),
])
def test_parse_name(name: str, expected: object) -> None:
    assert parse_name(name) == expected


@pytest.mark.parametrize("name", ["v1__lower.sql", "V1_init.sql", "V__x.sql", "R_x.sql",
                                  "V1a__x.sql", "init.sql"])
def test_misnamed_sql_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(MigrationError, match=r"V<version>__<description>\.sql"):
        parse_name(name)


def test_versions_compare_as_numbers() -> None:
    assert canonical_version("0001") == "1"
    assert canonical_version("1_10") == "1.10"


def test_checksum_ignores_line_endings_and_trailing_whitespace() -> None:
    base = "CREATE TABLE t (id int);\nSELECT 1;\n"
    assert checksum(base) == checksum("CREATE TABLE t (id int);   \r\nSELECT 1;\r\n\r\n")
    assert checksum(base) == checksum("\ufeff" + base.replace("\n", "\r"))
    assert checksum(base) != checksum(base.replace("int", "bigint"))
    assert checksum(base) != checksum("  " + base)  # leading indentation is content
    assert normalise("a  \n\n\n") == "a\n"


def test_nontransactional_directive_only_in_header() -> None:
    assert directives("-- comment\n-- pg-platform: nontransactional\nSELECT 1;", "f") == \
        {"nontransactional"}
    assert directives("SELECT 1;\n-- pg-platform: nontransactional\n", "f") == frozenset()
    with pytest.raises(MigrationError, match="unknown directive 'non-transactional'"):
        directives("-- pg-platform: non-transactional\n", "f")


def test_tracks_sort_and_refuse_wrong_kinds(tmp_path: Path) -> None:
    d = tmp_path / "schema"
    d.mkdir()
    for name in ("V10__c.sql", "V2__b.sql", "R__z.sql", "V1__a.sql", "notes.txt"):
        (d / name).write_text("SELECT 1;\n")
    assert [m.script for m in load_track(d, Track.SCHEMA)] == \
        ["V1__a.sql", "V2__b.sql", "V10__c.sql", "R__z.sql"]
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "V1__x.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="policies track; this track takes repeatable"):
        load_track(pol, Track.POLICIES)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "tenant"
    d.mkdir()
    (d / "V1__a.sql").write_text("SELECT 1;")
    (d / "V0001__b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="both have version 1"):
        load_track(d, Track.TENANT)


def test_repository_sql_loads() -> None:
    ms = MigrationSet.load(Path(__file__).resolve().parents[2] / "sql")
    assert ms.schema and ms.tenant and ms.policies
    assert all(len(v) == 64 for v in ms.fingerprint().values())


def test_split_respects_quotes_comments_and_dollar_bodies() -> None:
    text = (
        "-- leading comment; not a statement\n"
        "CREATE TABLE t (a text DEFAULT 'x;y');\n"
        "/* block /* nested; */ still; */\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$;\n"
        "SELECT E'it\\'s;', \"we;ird\" FROM t;\n"
        "SELECT $1;\n"
    )
    stmts = sqltext.split(text)
    assert [s.line for s in stmts] == [2, 4, 5, 6, 7]
    assert stmts[0].text == "CREATE TABLE t (a text DEFAULT 'x;y')"
    assert stmts[1].text.startswith("DO $$") and stmts[1].text.endswith("END $$")
    assert stmts[3].text.endswith('"we;ird" FROM t')


def test_split_reports_unclosed_quotes() -> None:
    with pytest.raises(MigrationError, match="<sql>:2: dollar-quoted"):
        sqltext.split("SELECT 1;\nDO $$ BEGIN")
    with pytest.raises(MigrationError, match="<sql>:1: string opened here is never closed"):
        sqltext.split("SELECT 'abc")
