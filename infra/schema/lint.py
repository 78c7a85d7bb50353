"""Checks on the files themselves, run without a database.

``validate`` runs every check in :data:`CHECKS` over every file; ``plan``,
``status`` and ``apply`` run them over the files that are pending, so that a
refused file stops the apply before anything of it runs. A check is a plain
function ``(SqlFile) -> list[Problem]``: add one by appending it to
:data:`CHECKS` (or pass your own list to :func:`run`). A file that does not
parse is one problem (its syntax error, with file and line), and the checks
do not see it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from infra.errors import MigrationError
from infra.schema.files import Migration
from infra.schema.sqltext import Kind, Statement


@dataclass(frozen=True)
class SqlFile:
    """A migration and its statements: what lint checks look at."""

    migration: Migration
    statements: tuple[Statement, ...]

    @property
    def ref(self) -> str:
        return self.migration.ref


def parse(m: Migration) -> SqlFile:
    """The file's statements (split once per loaded file, then kept)."""
    return SqlFile(m, m.statements)


@dataclass(frozen=True)
class Problem:
    """One reason a file must not run, at ``ref:line``."""

    ref: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.ref}:{self.line}: {self.message}" if self.line else \
            f"{self.ref}: {self.message}"


Check = Callable[[SqlFile], list[Problem]]


def transaction_control(f: SqlFile) -> list[Problem]:
    """A transactional file must not end the transaction the engine runs it in."""
    if not f.migration.transactional:
        return []
    return [Problem(f.ref, s.line,
                    f"{s.text.split(None, 1)[0].upper()} at top level would end the "
                    "transaction the engine runs this file in, so a later failure would "
                    "keep partial work; remove it, or mark the file "
                    "'-- pg-platform: nontransactional'")
            for s in f.statements if s.kind is Kind.TRANSACTION]


CHECKS: list[Check] = [transaction_control]


def run(migrations: Iterable[Migration], checks: Sequence[Check] | None = None) -> list[Problem]:
    """Every problem of every file, in file order."""
    out: list[Problem] = []
    for m in migrations:
        try:
            f = parse(m)
        except MigrationError as exc:
            out.append(_parse_problem(m, exc))
            continue
        for check in CHECKS if checks is None else checks:
            out += check(f)
    return out


def _parse_problem(m: Migration, exc: MigrationError) -> Problem:
    text = str(exc)
    prefix = f"{m.ref}:"
    if text.startswith(prefix):
        line, _, rest = text[len(prefix):].partition(": ")
        if line.isdigit():
            return Problem(m.ref, int(line), rest)
    return Problem(m.ref, 0, text)
