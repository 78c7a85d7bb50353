"""A migration's statements, found by PostgreSQL's own grammar, and their placeholders.

The grammar is libpg_query's, through ``pglast`` (pinned in pyproject.toml;
see :data:`GRAMMAR`), so whatever the server can parse splits the way the
server would: ``BEGIN ATOMIC … END`` function bodies, multi-action rules
``DO ALSO (a; b)``, strings, identifiers, dollar bodies and nested comments.
A syntax error is found without a database and names the file and line.

The grammar sees each placeholder as a quoted identifier or string of the
same length (:meth:`infra.schema.lexer.Scan.masked`), so offsets and lines
stay those of the file, and the split does not depend on the values: a file
is split once, however many tenant schemas it is applied to. Values are
quoted by ``psycopg.sql`` (``Identifier``/``Literal``) when a statement is
rendered and never pass through string formatting, so a slug cannot inject SQL.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import enums as pg_enums
from pglast import parser as pg_parser
from psycopg import sql

from infra.errors import MigrationRefused
from infra.schema import lexer
from infra.schema.lexer import Edit, Scan

GRAMMAR = "PostgreSQL {}.{} (pglast {})".format(
    *pg_parser.get_postgresql_version(), pglast.__version__.lstrip("v"))

_TX_WORD = re.compile(r"(begin|start|commit|end|rollback|abort|prepare)\b", re.IGNORECASE)
_ENDS_TRANSACTION = frozenset({
    pg_enums.TransactionStmtKind.TRANS_STMT_BEGIN,
    pg_enums.TransactionStmtKind.TRANS_STMT_START,
    pg_enums.TransactionStmtKind.TRANS_STMT_COMMIT,
    pg_enums.TransactionStmtKind.TRANS_STMT_ROLLBACK,
    pg_enums.TransactionStmtKind.TRANS_STMT_PREPARE,
    pg_enums.TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
    pg_enums.TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
})
FORMS = ("ident", "literal")


class Kind(enum.StrEnum):
    SQL = "sql"
    COPY = "copy"  # COPY … FROM STDIN; its rows are in Statement.data
    TRANSACTION = "transaction"  # BEGIN, COMMIT, ROLLBACK, PREPARE TRANSACTION …


@dataclass(frozen=True)
class Statement:
    """One statement as written (placeholders still in it), and where it starts.

    :param masked: the text the grammar parsed (placeholders masked).
    :param edits: placeholders and escapes, offsets relative to the statement.
    :param data: for ``COPY … FROM STDIN``, its rows, sent as they are.
    :param data_line: the file line of the first data row.
    """

    text: str
    line: int
    kind: Kind = Kind.SQL
    masked: str = ""
    edits: tuple[Edit, ...] = ()
    data: str | None = None
    data_line: int = 0

    def node(self) -> Any:
        """The statement's parse tree (a pglast node), for lint checks."""
        return pg_parser.parse_sql(self.masked or self.text)[0].stmt

    def render(self, values: Mapping[str, str], ref: str) -> sql.Composed:
        """The statement with each placeholder quoted by psycopg.sql.

        :raises MigrationRefused: for a placeholder with no value or an unknown
            form, naming the file, line, placeholder and the defined names.
        """
        parts: list[sql.Composable] = []
        pos = 0
        for e in self.edits:
            parts.append(sql.SQL(self.text[pos:e.start]))
            if e.kind == "escape":
                parts.append(sql.SQL(self.text[e.start + 1:e.end]))
            else:
                line = self.line + self.text.count("\n", 0, e.start)
                parts.append(_value(e, values, f"{ref}:{line}"))
            pos = e.end
        parts.append(sql.SQL(self.text[pos:]))
        return sql.Composed(parts)


def _value(e: Edit, values: Mapping[str, str], where: str) -> sql.Composable:
    if e.kind not in FORMS:
        raise MigrationRefused(
            f"{where}: placeholder ${{{e.name}:{e.kind}}} has an unknown form {e.kind!r}; "
            "allowed: ident (the default), literal")
    if e.name not in values:
        raise MigrationRefused(f"{where}: unknown placeholder ${{{e.name}}}; defined: "
                               + ", ".join(sorted(values)))
    value = values[e.name]
    return sql.Identifier(value) if e.kind == "ident" else sql.Literal(value)


def split(text: str, ref: str = "<sql>", *, placeholders: bool = True,
          scanned: Scan | None = None) -> list[Statement]:
    """Every statement of a file's text, in order, with its file line.

    :param scanned: the text's scan, when the caller already has it.
    :raises MigrationRefused: for a syntax error or unreadable psql input,
        naming ``ref:line``.
    """
    sc = scanned or lexer.scan(text, ref, placeholders=placeholders)
    out: list[Statement] = []
    start = 0
    for copy in sc.copies:
        _split_region(sc, ref, start, copy.data_start, out, copy)
        start = copy.resume
    _split_region(sc, ref, start, len(text), out, None)
    return out


def _split_region(sc: Scan, ref: str, start: int, end: int, out: list[Statement],
                  copy: lexer.CopyData | None) -> None:
    masked = sc.masked(start, end)
    try:
        slices = list(pglast.split(masked, with_parser=True, only_slices=True))
    except pg_parser.ParseError as exc:
        message, index = exc.args[0], exc.args[1] if len(exc.args) > 1 else 0
        raise MigrationRefused(f"{ref}:{sc.line_of(start + max(int(index), 0))}: "
                               f"syntax error per the {GRAMMAR} grammar: {message}") from None
    text = sc.text
    for sl in slices:
        a, b = start + sl.start, start + sl.stop
        kind = Kind.SQL
        data: str | None = None
        data_line = 0
        if copy is not None and copy.statement_start <= a < copy.semicolon:
            kind, data = Kind.COPY, text[copy.data_start:copy.data_end]
            data_line = sc.line_of(copy.data_start)
        m_text = masked[sl]
        if _TX_WORD.match(m_text) and _ends_transaction(m_text):
            kind = Kind.TRANSACTION
        edits = tuple(Edit(e.start - a, e.end - a, e.kind, e.name) for e in sc.edits_in(a, b))
        stmt_text = text[a:b] if edits or m_text != text[a:b] else m_text
        out.append(Statement(stmt_text, sc.line_of(a), kind, m_text, edits, data, data_line))


def _ends_transaction(masked: str) -> bool:
    node: Any = pg_parser.parse_sql(masked)[0].stmt
    return type(node).__name__ == "TransactionStmt" and node.kind in _ENDS_TRANSACTION
