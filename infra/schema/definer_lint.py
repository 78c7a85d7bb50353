"""A lint for SECURITY DEFINER functions: refuse any without a safe search_path.

A SECURITY DEFINER function runs with its owner's privileges. Unless its
search_path is pinned, and ``pg_temp`` is named explicitly *last*, the caller's
temporary schema is searched first for relations and types, so a caller can
plant ``pg_temp.uuid`` (a domain whose CHECK calls the caller's code) and run
that code as the owner. Safe forms, the only ones accepted here::

    SET search_path = pg_catalog, pg_temp      -- pg_temp explicitly last
    SET search_path = ''                       -- every name schema-qualified

The lint reads every CREATE FUNCTION/PROCEDURE and ALTER FUNCTION/PROCEDURE/
ROUTINE statement, including those inside DO blocks and dynamic SQL strings
(it looks into dollar-quoted and single-quoted text that mentions SECURITY
DEFINER), and names the file and line of each unsafe one. It does not check
that a function with an empty search_path qualifies every name; PostgreSQL
then fails at run time on an unqualified one, which is safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.errors import MigrationError

_ROUTINE = re.compile(r"^\s*(CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)|"
                      r"ALTER\s+(FUNCTION|PROCEDURE|ROUTINE))\b", re.I)
_NAME = re.compile(r"\b(?:FUNCTION|PROCEDURE|ROUTINE)\s+((?:\"[^\"]+\"|[\w$]+)"
                   r"(?:\s*\.\s*(?:\"[^\"]+\"|[\w$]+))?)", re.I)
_DROP = re.compile(r"^\s*DROP\s+(FUNCTION|PROCEDURE|ROUTINE)\b", re.I)
_DEFINER = re.compile(r"\bSECURITY\s+DEFINER\b", re.I)
_INVOKER = re.compile(r"\bSECURITY\s+INVOKER\b", re.I)
_SET_PATH = re.compile(r"\bSET\s+search_path\s*(?:=|\bTO\b)\s*(?P<value>.*?)"
                       r"(?=\bAS\b|\bLANGUAGE\b|\bSECURITY\b|\bSET\b|\bSTABLE\b|\bVOLATILE\b|"
                       r"\bIMMUTABLE\b|\bSTRICT\b|\bCOST\b|\bPARALLEL\b|\bRETURNS\b|"
                       r"\bLEAKPROOF\b|\bCALLED\b|\bRESET\b|\bROWS\b|\bSUPPORT\b|\bWINDOW\b|"
                       r"\bEXTERNAL\b|\bNOT\b|\bDEPENDS\b|$)", re.I | re.S)
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")

ALLOWED = "SET search_path = pg_catalog, pg_temp (pg_temp last) or SET search_path = ''"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    message: str
    routine: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class _Token:
    kind: str  # code, string, dollar
    text: str
    line: int


def _tokens(text: str, line: int = 1) -> Iterator[_Token]:
    """Code, '…' strings (unquoted content) and $tag$ bodies; comments are dropped."""
    i, n, start, start_line = 0, len(text), 0, line

    def code(end: int) -> Iterator[_Token]:
        if end > start:
            yield _Token("code", text[start:end], start_line)

    while i < n:
        c, nxt = text[i], text[i + 1:i + 2]
        if c == "-" and nxt == "-":
            yield from code(i)
            end = text.find("\n", i)
            i = n if end < 0 else end
            start, start_line = i, line
        elif c == "/" and nxt == "*":
            yield from code(i)
            depth = 0
            while i < n:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                    if depth == 0:
                        break
                else:
                    line += text[i] == "\n"
                    i += 1
            start, start_line = i, line
        elif c == "'":
            yield from code(i)
            j, buf = i + 1, []
            while j < n:
                if text[j] == "'" and text[j + 1:j + 2] == "'":
                    buf.append("'")
                    j += 2
                    continue
                if text[j] == "'":
                    break
                buf.append(text[j])
                j += 1
            yield _Token("string", "".join(buf), line)
            line += text.count("\n", i, j)
            i = j + 1
            start, start_line = i, line
        elif c == "$" and (i == 0 or text[i - 1] not in _IDENT) and \
                (m := _DOLLAR_TAG.match(text, i)) is not None:
            close = text.find(m.group(0), m.end())
            if close < 0:
                close = n
            yield from code(i)
            yield _Token("dollar", text[m.end():close], line)
            line += text.count("\n", i, close)
            i = close + len(m.group(0))
            start, start_line = i, line
        else:
            line += c == "\n"
            i += 1
    yield from code(n)


def _statements(text: str, line: int = 1) -> Iterator[list[_Token]]:
    stmt: list[_Token] = []
    for tok in _tokens(text, line):
        if tok.kind != "code" or ";" not in tok.text:
            stmt.append(tok)
            continue
        offset, tline = 0, tok.line
        for part in tok.text.split(";")[:-1]:
            stmt.append(_Token("code", part, tline))
            yield stmt
            tline += part.count("\n")
            offset += len(part) + 1
            stmt = []
        stmt.append(_Token("code", tok.text[offset:], tline))
    if any(t.text.strip() for t in stmt):
        yield stmt


def _header(stmt: list[_Token]) -> str:
    """The statement with bodies blanked and strings re-quoted, for the clause regexes."""
    out = []
    for t in stmt:
        if t.kind == "code":
            out.append(t.text)
        elif t.kind == "string":
            out.append("'" + t.text.replace("'", "''") + "'")
        else:
            out.append(" $body$ ")
    return "".join(out)


def _first_line(stmt: list[_Token]) -> int:
    for t in stmt:
        if t.text.strip():
            lead = t.text[:len(t.text) - len(t.text.lstrip())]
            return t.line + lead.count("\n") if t.kind == "code" else t.line
    return stmt[0].line if stmt else 1


def safe_search_path(value: str) -> bool:
    """True for '' or a list of pg_catalog/pg_temp that ends in pg_temp."""
    items = [v.strip().strip("'\"").strip().lower() for v in value.strip().split(",")]
    if items == [""]:
        return True
    if any(v not in ("pg_catalog", "pg_temp") for v in items):
        return False
    return items[-1] == "pg_temp"


def _routine_name(head: str) -> str:
    m = _NAME.search(head)
    return m.group(1).replace('"', "").lower() if m else ""


def _scan(text: str, path: str, line: int, fixed: set[str]) -> list[Finding]:
    """Findings in `text`; adds to `fixed` every routine (re)defined safely."""
    findings: list[Finding] = []
    for stmt in _statements(text, line):
        head = _header(stmt)
        at = _first_line(stmt)
        if _ROUTINE.match(head):
            routine = _routine_name(head)
            paths = [m.group("value") for m in _SET_PATH.finditer(head)]
            definer = _DEFINER.search(head) and not _INVOKER.search(head)
            name = " ".join(head.split()[:6])
            if definer and not paths:
                findings.append(Finding(path, at, f"{name}…: SECURITY DEFINER without "
                                        f"SET search_path; use {ALLOWED}", routine))
                fixed.discard(routine)
            elif definer and not all(safe_search_path(p) for p in paths):
                findings.append(Finding(path, at, f"{name}…: SECURITY DEFINER with unsafe "
                                        f"SET search_path = {paths[0].strip()}; use {ALLOWED}",
                                        routine))
                fixed.discard(routine)
            elif (paths and all(safe_search_path(p) for p in paths)) or \
                    (head.lstrip().upper().startswith("CREATE") and not definer):
                fixed.add(routine)
        elif _DROP.match(head):
            fixed.add(_routine_name(head))
        for tok in stmt:
            if tok.kind in ("dollar", "string") and _DEFINER.search(tok.text):
                findings += _scan(tok.text, path, tok.line, fixed)
    return findings


def lint_text(text: str, path: str, line: int = 1) -> list[Finding]:
    return _scan(text, path, line, set())


def lint_files(files: Iterable[tuple[str, str]]) -> list[Finding]:
    """`files` as (path, text) pairs, in the order the engine applies them.

    A finding is dropped when a later statement replaces, drops or pins the
    same routine safely: applied versioned files cannot be edited, so an old
    unsafe definition is fixed by a newer migration (sql/schema/V0005).
    """
    found: list[Finding] = []
    fixed: set[str] = set()
    for path, text in files:
        new = _scan(text, path, 1, fixed)
        fixed -= {f.routine for f in new}
        found = [f for f in found if f.routine not in fixed] + new
    return [f for f in found if f.routine not in fixed]


def refuse(files: Iterable[tuple[str, str]]) -> None:
    """:raises MigrationError: naming every unsafe SECURITY DEFINER with its file and line."""
    findings = lint_files(files)
    if findings:
        raise MigrationError("refusing unsafe SECURITY DEFINER function(s): "
                             + "; ".join(str(f) for f in findings))


def sql_files(sql_dir: Path) -> list[tuple[str, str]]:
    """Every file of the three tracks, in apply order: schema, tenant, policies; V before R."""
    def order(p: Path) -> tuple[int, bool, str]:
        track = {"schema": 0, "tenant": 1, "policies": 2}.get(p.parent.name, 3)
        return track, p.name.startswith("R__"), p.name

    files = sorted(sql_dir.glob("*/*.sql"), key=order)
    return [(str(p), p.read_text(encoding="utf-8")) for p in files]
