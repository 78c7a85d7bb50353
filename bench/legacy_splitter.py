"""The engine's splitter before pglast (commit 184922a), kept as the splitter benchmark's baseline.

A character-at-a-time scanner for quotes, dollar bodies and comments; it
knew no parentheses and no ``BEGIN ATOMIC``. Not used by the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.errors import MigrationError

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")


@dataclass(frozen=True)
class Statement:
    """One statement's text (without its ';') and the file line it starts on."""

    text: str
    line: int


def split(text: str) -> list[Statement]:
    """Split SQL text on top-level semicolons; empty statements are dropped."""
    out: list[Statement] = []
    i, n, line = 0, len(text), 1
    start: int | None = None  # index of the first code character of the statement
    start_line = 1

    def flush(end: int) -> None:
        nonlocal start
        if start is not None:
            body = text[start:end].rstrip()
            if body:
                out.append(Statement(body, start_line))
        start = None

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "\n":
            line += 1
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if c == "-" and nxt == "-":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "/" and nxt == "*":
            i, line = _skip_block_comment(text, i, line)
            continue
        if c == ";":
            flush(i)
            i += 1
            continue
        if start is None:
            start, start_line = i, line
        if c == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or text[i - 2] not in _IDENT_CHARS)
            i, line = _skip_quoted(text, i, line, "'", escapes)
        elif c == '"':
            i, line = _skip_quoted(text, i, line, '"', False)
        elif c == "$" and (i == 0 or text[i - 1] not in _IDENT_CHARS) and \
                (m := _DOLLAR_TAG.match(text, i)) is not None:
            tag = m.group(0)
            close = text.find(tag, m.end())
            if close < 0:
                raise MigrationError(f"line {line}: dollar-quoted text {tag} is never closed")
            line += text.count("\n", i, close)
            i = close + len(tag)
        else:
            i += 1
    flush(n)
    return out


def _skip_block_comment(text: str, i: int, line: int) -> tuple[int, int]:
    """Block comments nest in PostgreSQL, unlike in C."""
    depth, start_line = 0, line
    n = len(text)
    while i < n:
        two = text[i:i + 2]
        if two == "/*":
            depth += 1
            i += 2
        elif two == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i, line
        else:
            if text[i] == "\n":
                line += 1
            i += 1
    raise MigrationError(f"line {start_line}: /* comment is never closed")


def _skip_quoted(text: str, i: int, line: int, quote: str, escapes: bool) -> tuple[int, int]:
    """Skip '…' or "…", where a doubled quote (or \\' in E'…') stays inside."""
    start_line = line
    i += 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        if escapes and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1, line
        i += 1
    raise MigrationError(f"line {start_line}: {quote} quote is never closed")
