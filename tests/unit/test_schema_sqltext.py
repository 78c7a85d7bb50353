"""The splitter, COPY blocks, psql lines, placeholders and checksums, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.errors import MigrationRefused
from infra.schema import lint, sqltext
from infra.schema.files import (
    Track,
    canonical_version,
    checksum,
    legacy_checksum,
    load_track,
    parse_name,
)
from infra.schema.sqltext import Kind


def test_begin_atomic_and_rules_with_several_actions_are_one_statement_each() -> None:
    text = ("CREATE FUNCTION f(i int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
            "  SELECT i; SELECT i + 1;\nEND;\n"
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1);\n"
            "  INSERT INTO b VALUES (2));\n"
            "SELECT 'é'; SELECT 2;\n")
    stmts = sqltext.split(text)
    assert [s.line for s in stmts] == [1, 5, 7, 7]
    assert stmts[0].text.endswith("END") and stmts[1].text.endswith("VALUES (2))")
    assert [s.text for s in stmts[2:]] == ["SELECT 'é'", "SELECT 2"]


def test_syntax_errors_name_the_file_line_even_after_multibyte_text() -> None:
    with pytest.raises(MigrationRefused, match=r"f\.sql:3: syntax error .*PostgreSQL 1[5-9]"):
        sqltext.split("SELECT '€€€';\n\nSELECT 1 FORM t;\n", "f.sql")


def test_copy_from_stdin_takes_its_rows_verbatim_up_to_the_end_line() -> None:
    rows = "it's\t\"q\"\tback\\\\slash\n$$ ${app_role} ; --\t\\N\n"
    text = f"SET x = 1;\nCOPY t (a, b) FROM stdin;\n{rows}\\.\nSELECT 1;\n"
    stmts = sqltext.split(text, "d.sql")
    assert [(s.kind, s.line) for s in stmts] == [(Kind.SQL, 1), (Kind.COPY, 2), (Kind.SQL, 6)]
    assert stmts[1].data == rows and stmts[1].data_line == 3 and stmts[1].edits == ()
    with pytest.raises(MigrationRefused, match=r"d\.sql:1: COPY … FROM STDIN data has no "):
        sqltext.split("COPY t FROM stdin;\n1\n", "d.sql")
    with pytest.raises(MigrationRefused, match=r"d\.sql:1: COPY … TO STDOUT"):
        sqltext.split("COPY t TO stdout;\n", "d.sql")
    server_file = sqltext.split("COPY t FROM '/tmp/x.csv';\nSELECT 1;", "d.sql")
    assert [s.kind for s in server_file] == [Kind.SQL, Kind.SQL]


def test_pg_dump_restrict_lines_are_skipped_other_meta_commands_refused() -> None:
    stmts = sqltext.split("\\restrict abc123\nSELECT 1;\n\\unrestrict abc123\n", "d.sql")
    assert [s.text for s in stmts] == ["SELECT 1"]
    with pytest.raises(MigrationRefused, match=r"d\.sql:2: psql meta-command \\connect is not "
                                               r"supported; only \\restrict, \\unrestrict"):
        sqltext.split("SELECT 1;\n\\connect other\nSELECT 2;\n", "d.sql")


def _placeholders(text: str) -> list[tuple[str, str]]:
    return [(e.kind, e.name) for s in sqltext.split(text) for e in s.edits]


def test_placeholders_count_only_in_code() -> None:
    assert _placeholders("-- ${a}\nSELECT ${a}, '${b}', E'\\'${c}', \"${d}\" /* ${e} */;") == \
        [("ident", "a")]
    # A stored body: explicit forms only; a DO body is code.
    assert _placeholders("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS "
                         "$f$ SELECT ${a:literal}, '${b}', ${c}, ${d:ident} $f$;") == \
        [("literal", "a"), ("ident", "d")]
    assert _placeholders("DO $$ BEGIN CREATE ROLE ${a}; RAISE NOTICE '${b}'; END $$;") == \
        [("ident", "a")]
    # $${…} escapes; a header turns substitution off.
    assert _placeholders("DO $d$ BEGIN RAISE NOTICE '%', $${a}; END $d$;") == [("escape", "")]
    off = sqltext.split("DO $$ BEGIN CREATE ROLE ${a}; END $$;", placeholders=False)
    assert off[0].edits == () and "${a}" in off[0].masked
    with pytest.raises(MigrationRefused, match="syntax error"):  # then ${a} is not SQL
        sqltext.split("SELECT ${a};", placeholders=False)


def test_rendered_placeholders_are_quoted_by_psycopg() -> None:
    [stmt] = sqltext.split('GRANT USAGE ON SCHEMA ${s} TO ${r}; -- ${r}', "f.sql")
    assert stmt.render({"s": 'we"ird', "r": "app"}, "f.sql").as_string(None) == \
        'GRANT USAGE ON SCHEMA "we""ird" TO "app"'
    with pytest.raises(MigrationRefused, match=r"f\.sql:1: placeholder \$\{s:raw\} has an unknown"):
        sqltext.split("SELECT ${s:raw};", "f.sql")[0].render({"s": "x"}, "f.sql")


@pytest.mark.parametrize(("text", "kind"), [
    ("COMMIT", Kind.TRANSACTION), ("END", Kind.TRANSACTION), ("ABORT", Kind.TRANSACTION),
    ("BEGIN", Kind.TRANSACTION), ("START TRANSACTION", Kind.TRANSACTION),
    ("ROLLBACK", Kind.TRANSACTION), ("PREPARE TRANSACTION 'x'", Kind.TRANSACTION),
    ("SAVEPOINT s", Kind.SQL), ("ROLLBACK TO SAVEPOINT s", Kind.SQL), ("RELEASE s", Kind.SQL),
    ("PREPARE q AS SELECT 1", Kind.SQL), ("END_TABLE_IS_NOT_A_WORD", Kind.SQL),
])
def test_transaction_control_is_told_apart(text: str, kind: Kind) -> None:
    if kind is Kind.SQL and text.startswith("END_"):
        text = "SELECT 1 AS end_table_is_not_a_word"
    assert sqltext.split(text + ";")[0].kind is kind


def test_checksums_keep_trailing_whitespace_inside_literals_only() -> None:
    base = "CREATE TABLE t (v text DEFAULT 'a  \nb');\nSELECT 1;\n"
    assert checksum(base) == checksum("\ufeff" + base.replace("\n", "\r\n").replace(";", ";  "))
    assert checksum(base) != checksum(base.replace("'a  \n", "'a\n"))  # data changed
    assert legacy_checksum(base) == legacy_checksum(base.replace("'a  \n", "'a\n"))  # old rule
    body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1;  \n$$;\n"
    assert checksum(body) != checksum(body.replace(";  \n", ";\n"))
    copy = "COPY t FROM stdin;\na\t\n\\.\n"  # an empty last column ends the row with a tab
    assert checksum(copy) != checksum(copy.replace("a\t\n", "a\n"))
    assert checksum("SELECT 1;   -- note   \n\n") == checksum("SELECT 1;   -- note\n")


def test_versions_compare_as_numbers_with_trailing_zeros_ignored(tmp_path: Path) -> None:
    assert canonical_version("1.0") == canonical_version("1") == canonical_version("0001_0")
    assert canonical_version("1.0.1") == "1.0.1" and canonical_version("0") == "0"
    assert parse_name("V1.0__x.sql") == parse_name("V1__x.sql")
    d = tmp_path / "schema"
    d.mkdir()
    (d / "V1__a.sql").write_text("SELECT 1;")
    (d / "V1.0__b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationRefused, match=r"schema/V1\.0__b\.sql and schema/V1__a\.sql "
                                               r"both have version 1"):
        load_track(d, Track.SCHEMA)


def test_lint_checks_are_plain_functions_that_can_be_added(tmp_path: Path) -> None:
    d = tmp_path / "schema"
    d.mkdir()
    (d / "V1__a.sql").write_text("CREATE TABLE t (id int);\nCOMMIT;\n")
    (d / "V2__b.sql").write_text("SELECT 1;\nDROP TABLE t;\n")
    (d / "V3__c.sql").write_text("SELECT (;\n")
    ms = load_track(d, Track.SCHEMA)

    def no_drop(f: lint.SqlFile) -> list[lint.Problem]:
        return [lint.Problem(f.ref, s.line, "DROP TABLE is not allowed")
                for s in f.statements if type(s.node()).__name__ == "DropStmt"]

    found = [str(p) for p in lint.run(ms, [*lint.CHECKS, no_drop])]
    assert found[0].startswith("schema/V1__a.sql:2: COMMIT at top level")
    assert found[1] == "schema/V2__b.sql:2: DROP TABLE is not allowed"
    assert found[2].startswith("schema/V3__c.sql:1: syntax error")
    assert len(found) == 3


_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r"),
                max_size=30)


def _copy_field(value: str) -> str:
    """COPY text format, as pg_dump writes it."""
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n"))


@settings(max_examples=150, deadline=None)
@given(values=st.lists(_TEXT, min_size=1, max_size=8), rows=st.lists(_TEXT, max_size=6))
def test_any_literal_text_and_copy_data_survive_the_split(values: list[str],
                                                          rows: list[str]) -> None:
    """Quotes, semicolons, backslashes, dollars, placeholder look-alikes: nothing leaks."""
    stmts = [f"SELECT '{v.replace(chr(39), chr(39) * 2)}' AS c" for v in values]
    data = "".join(_copy_field(r) + "\n" for r in rows)
    text = ";\n".join(stmts) + ";\nCOPY t (v) FROM stdin;\n" + data + "\\.\nSELECT 2;\n"
    got = sqltext.split(text, "p.sql")
    assert [s.text for s in got[:len(values)]] == stmts
    assert all(s.edits == () for s in got)
    assert [s.line for s in got[:len(values)]] == \
        [1 + sum(v.count("\n") for v in values[:i]) + i for i in range(len(values))]
    copy, last = got[len(values)], got[-1]
    assert copy.kind is Kind.COPY and copy.data == data
    assert last.text == "SELECT 2" and last.line == text.count("\n", 0, text.rindex("SELECT 2")) + 1
