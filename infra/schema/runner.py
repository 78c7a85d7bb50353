"""Run one migration file: a clean session, its own transaction, its history row.

Every file starts from the same session, whatever the file before it did:
``RESET SESSION AUTHORIZATION``, ``RESET ROLE`` and ``RESET ALL`` (so
search_path and every ``SET`` or ``set_config(…, false)`` return to the
role's and database's defaults), then, for a tenant file, ``search_path`` =
the tenant schema, public.

A transactional file's statements and its history row commit together, so a
failure leaves the database exactly as it was and records nothing; a file
that would end that transaction itself (a top-level BEGIN, COMMIT,
ROLLBACK…) is refused before anything runs (:mod:`infra.schema.lint`). A file marked
``-- pg-platform: nontransactional`` runs each statement on its own
(autocommit), which CREATE INDEX CONCURRENTLY needs; its history row is
written only after the last statement succeeds, so a failed run is retried
as a whole and such files should be idempotent (``IF NOT EXISTS``).

``COPY … FROM STDIN`` rows are streamed through ``cursor.copy()`` as written.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from infra.errors import MigrationError
from infra.schema import history
from infra.schema.files import Migration
from infra.schema.sqltext import Kind, Statement

logger = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 18
_COPY_LINE = re.compile(r"\bline (\d+)")
_CLEAN = sql.SQL("RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL")


def connect(dsn: str, purpose: str) -> psycopg.Connection[Any]:
    """An autocommit connection; transactions are opened explicitly per migration."""
    conn = psycopg.connect(dsn, autocommit=True, application_name=f"pg-platform {purpose}")
    conn.add_notice_handler(lambda d: logger.debug("notice: %s", d.message_primary))
    return conn


def run(conn: psycopg.Connection[Any], m: Migration, values: Mapping[str, str],
        history_schema: str, tenant_schema: str | None = None,
        prelude: sql.Composed | None = None, durable: bool = True) -> int:
    """Apply `m` and record it; return its execution time in milliseconds.

    :param values: placeholder values; for a tenant migration they include
        ``tenant_schema``, which also leads the search_path while it runs.
    :param prelude: statements run first, inside the same transaction when
        there is one (creating a new tenant's schema), so a failure undoes them.
    :param durable: False commits without waiting for the WAL flush
        (``synchronous_commit = off`` for this transaction only). The caller must
        follow it with a durable commit on the same server before it reports
        success: that flush covers every earlier commit. A crash in between loses a
        suffix of such commits, each with its history row, so they are pending again.
    :raises MigrationError: naming the file, the statement's line and
        PostgreSQL's message; nothing of the migration is recorded.
    """
    statements = m.statements
    where = f" in schema {tenant_schema}" if tenant_schema else ""
    logger.info("applying %s%s", m.ref, where)
    started = time.monotonic()
    # A non-transactional file runs statement by statement (autocommit).
    with conn.transaction() if m.transactional else contextlib.nullcontext():
        if prelude is not None:
            conn.execute(prelude)
        _clean_session(conn, tenant_schema)
        if not durable and m.transactional:
            conn.execute("SET LOCAL synchronous_commit = off")
        _execute_all(conn, m, statements, values, tenant_schema)
        ms = _elapsed_ms(started)
        history.record(conn, history_schema, m, tenant_schema, ms)
    return ms


def _clean_session(conn: psycopg.Connection[Any], tenant_schema: str | None) -> None:
    if tenant_schema:
        conn.execute(sql.SQL("{}; SET search_path TO {}, public").format(
            _CLEAN, sql.Identifier(tenant_schema)))
    else:
        conn.execute(_CLEAN)


def _execute_all(conn: psycopg.Connection[Any], m: Migration,
                 statements: tuple[Statement, ...], values: Mapping[str, str],
                 tenant_schema: str | None) -> None:
    for stmt in statements:
        query = stmt.render(values, m.ref)
        try:
            if stmt.kind is Kind.COPY:
                _copy(conn, query, stmt.data or "")
            else:
                conn.execute(query)
        except psycopg.Error as err:
            raise MigrationError(_describe_failure(conn, m, stmt, query, err,
                                                   tenant_schema)) from err


def _copy(conn: psycopg.Connection[Any], query: sql.Composed, data: str) -> None:
    with conn.cursor() as cur, cur.copy(query) as copy:
        for i in range(0, len(data), _COPY_CHUNK):
            copy.write(data[i:i + _COPY_CHUNK])


def _describe_failure(conn: psycopg.Connection[Any], m: Migration, stmt: Statement,
                      query: sql.Composed, err: psycopg.Error, tenant_schema: str | None) -> str:
    diag = err.diag
    line = stmt.line
    position = diag.statement_position
    copy_line = _COPY_LINE.search(diag.context or "") if stmt.kind is Kind.COPY else None
    if copy_line:
        line = stmt.data_line + int(copy_line.group(1)) - 1
    elif position and position.isdigit():
        try:
            rendered = query.as_string(conn)
        except (psycopg.Error, UnicodeError):
            rendered = stmt.text
        # Placeholders never hold newlines, so lines in `rendered` are file lines.
        line += rendered.count("\n", 0, int(position) - 1)
    message = (diag.message_primary or str(err)).strip()
    detail = f" ({diag.message_detail})" if diag.message_detail else ""
    state = f" [SQLSTATE {diag.sqlstate}]" if diag.sqlstate else ""
    first = stmt.text.splitlines()[0].strip() if stmt.text else ""
    where = f" for tenant schema {tenant_schema}" if tenant_schema else ""
    outcome = ("rolled back; nothing was recorded" if m.transactional else
               "statements before it in this non-transactional file stay applied; "
               "nothing was recorded, so the whole file runs again next time")
    return (f"{m.ref}:{line}: migration failed{where}: {message}{detail}{state}; "
            f"statement starting at line {stmt.line}: {first[:80]!r}; {outcome}")


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
