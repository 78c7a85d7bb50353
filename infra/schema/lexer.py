"""One pass over a migration's text: what is code, what is data, where placeholders are.

PostgreSQL's grammar (pglast, in :mod:`infra.schema.sqltext`) finds the
statements, but it cannot read two things a migration file may hold, so this
scanner finds them first:

* ``${name}`` placeholders, which are not SQL until substituted. They count
  only in code: never inside '…' strings, "…" identifiers or comments. In a
  dollar-quoted body only the explicit forms ``${name:literal}`` and
  ``${name:ident}`` count, except in a ``DO`` block, whose body is code that
  runs in this very migration and is scanned by the same rules as the file.
  ``$${name}`` is written as ``${name}`` wherever a placeholder would have
  been substituted, and left alone elsewhere.
* psql input that is not SQL: the data of ``COPY … FROM STDIN`` (up to the
  ``\\.`` line, no quoting rules apply to it), and backslash meta-commands.
  ``\\restrict`` / ``\\unrestrict`` (written by pg_dump since 15.14 to stop
  meta-commands hidden in dumped data) are skipped: the engine never runs a
  meta-command, so they protect nothing here. Any other meta-command
  (``\\connect``, ``\\i``, ``\\set`` …) is refused with its file and line.

The scanner also reports the protected regions (literals, bodies, COPY data)
so that checksums can ignore trailing whitespace everywhere else.

It jumps from one interesting character to the next with a regular
expression, so ordinary text costs C speed, not a Python loop per character.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from pglast import parser as pg_parser

from infra.errors import MigrationRefused

_INTERESTING = re.compile(r"--|/\*|['\";$\\]")
_BODY_INTERESTING = re.compile(r"\$")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}")
_ESCAPED = re.compile(r"\$\$\{[A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z]+)?\}")
_BLANK = re.compile(r"\s*")
_START_WORD = re.compile(r"(copy|do)\b", re.IGNORECASE)
_REST_OF_COPY_LINE = re.compile(r"[ \t\r]*(?:--[^\n]*)?(?:\n|$)")
_END_OF_DATA = re.compile(r"^\\\.[ \t\r]*$", re.MULTILINE)
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
SKIPPED_META = ("restrict", "unrestrict")


@dataclass(frozen=True)
class Edit:
    """A placeholder (``kind`` ident or literal) or an escape, at ``[start, end)``."""

    start: int
    end: int
    kind: str  # "ident", "literal" or "escape"
    name: str


@dataclass(frozen=True)
class CopyData:
    """``COPY … FROM STDIN``: the statement ends at ``semicolon``, its rows are
    ``text[data_start:data_end]``, and SQL resumes at ``resume``."""

    statement_start: int
    semicolon: int
    data_start: int
    data_end: int
    resume: int


@dataclass
class Scan:
    text: str
    edits: list[Edit] = field(default_factory=list)
    copies: list[CopyData] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
    protected: list[tuple[int, int]] = field(default_factory=list)
    _newlines: list[int] | None = None

    def line_of(self, pos: int) -> int:
        """The 1-based file line of a character offset."""
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, pos) + 1

    def masked(self, start: int, end: int) -> str:
        """``text[start:end]`` as the grammar should see it, offsets unchanged.

        A placeholder becomes a quoted identifier or string of its own length,
        an escape keeps its length with a leading space, a skipped meta line
        becomes spaces.
        """
        spans: list[tuple[int, int, str]] = []
        for e in self._edits_in(start, end):
            width = e.end - e.start
            if e.kind == "escape":
                spans.append((e.start, e.end, " " + self.text[e.start + 1:e.end]))
            else:
                quote = "'" if e.kind == "literal" else '"'
                spans.append((e.start, e.end, quote + "p" * (width - 2) + quote))
        spans += [(a, b, " " * (b - a)) for a, b in self.skipped if start <= a < end]
        if not spans:
            return self.text[start:end]
        spans.sort()
        parts: list[str] = []
        pos = start
        for a, b, replacement in spans:
            parts.append(self.text[pos:a])
            parts.append(replacement)
            pos = b
        parts.append(self.text[pos:end])
        return "".join(parts)

    def _edits_in(self, start: int, end: int) -> list[Edit]:
        lo = bisect.bisect_left(self.edits, start, key=lambda e: e.start)
        hi = bisect.bisect_left(self.edits, end, key=lambda e: e.start)
        return self.edits[lo:hi]

    def edits_in(self, start: int, end: int) -> list[Edit]:
        return self._edits_in(start, end)


def scan(text: str, ref: str, *, placeholders: bool = True) -> Scan:
    """Scan a whole file (BOM already removed, LF line endings).

    :raises MigrationRefused: for an unclosed quote, comment or body, COPY
        data without its ``\\.`` line, or an unsupported meta-command, naming
        ``ref:line``.
    """
    s = _Scanner(Scan(text), ref, placeholders)
    s.top()
    s.out.skipped.sort()
    return s.out


class _Scanner:
    def __init__(self, out: Scan, ref: str, placeholders: bool) -> None:
        self.out = out
        self.text = out.text
        self.ref = ref
        self.placeholders = placeholders

    def fail(self, pos: int, message: str) -> MigrationRefused:
        return MigrationRefused(f"{self.ref}:{self.out.line_of(pos)}: {message}")

    def top(self) -> None:
        text, n = self.text, len(self.text)
        i = 0
        while i < n:
            i = self._skip_blank(i, n)
            if i >= n:
                return
            start = i
            word = _START_WORD.match(text, i)
            kind = word.group(1).lower() if word else ""
            semicolon = self.code(i, n, in_do=kind == "do", stop_at_semicolon=True)
            if semicolon < 0:
                return
            i = semicolon + 1
            if kind == "copy":
                i = self._copy(start, semicolon)

    def _skip_blank(self, i: int, end: int) -> int:
        text = self.text
        while True:
            blank = _BLANK.match(text, i, end)
            i = blank.end() if blank else i
            if text.startswith("--", i):
                nl = text.find("\n", i, end)
                i = end if nl < 0 else nl
            elif text.startswith("/*", i):
                i = self._block_comment(i, end)
            elif text.startswith("\\", i):
                i = self._meta(i, end)
            else:
                return i

    def code(self, i: int, end: int, *, in_do: bool, stop_at_semicolon: bool) -> int:
        """Scan code from ``i``; return the offset of the ending ';' (or -1 at ``end``)."""
        text, out = self.text, self.out
        while True:
            m = _INTERESTING.search(text, i, end)
            if m is None:
                return -1
            i = m.start()
            c = m.group()
            if c == ";":
                if stop_at_semicolon:
                    return i
                i += 1
            elif c == "--":
                nl = text.find("\n", i, end)
                i = end if nl < 0 else nl
            elif c == "/*":
                i = self._block_comment(i, end)
            elif c == "'":
                close = self._quoted(i, end, self._escapes_at(i))
                out.protected.append((i, close))
                i = close
            elif c == '"':
                close = self._quoted(i, end, False)
                out.protected.append((i, close))
                i = close
            elif c == "\\":
                # psql reads a backslash in code as a meta-command; inside a DO
                # body it is plain text for the server to judge.
                i = self._meta(i, end) if stop_at_semicolon else i + 1
            else:
                i = self._dollar(i, end, in_do)

    def _escapes_at(self, i: int) -> bool:
        """E'…' strings take backslash escapes (standard_conforming_strings is on)."""
        text = self.text
        return i > 0 and text[i - 1] in "eE" and (i < 2 or text[i - 2] not in _IDENT_CHARS)

    def _dollar(self, i: int, end: int, in_do: bool) -> int:
        text, out = self.text, self.out
        if self.placeholders:
            if (e := _ESCAPED.match(text, i, end)) is not None:
                out.edits.append(Edit(i, e.end(), "escape", ""))
                return e.end()
            if (p := _PLACEHOLDER.match(text, i, end)) is not None:
                out.edits.append(Edit(i, p.end(), (p.group(2) or "ident").lower(), p.group(1)))
                return p.end()
        if i > 0 and text[i - 1] in _IDENT_CHARS:
            return i + 1  # part of an identifier (a$b) or a parameter ($1)
        tag = _DOLLAR_TAG.match(text, i, end)
        if tag is None:
            return i + 1
        close = text.find(tag.group(0), tag.end(), end)
        if close < 0:
            raise self.fail(i, f"dollar-quoted text {tag.group(0)} is never closed")
        out.protected.append((i, close + len(tag.group(0))))
        if self.placeholders:
            if in_do:
                self.code(tag.end(), close, in_do=True, stop_at_semicolon=False)
            else:
                self._body(tag.end(), close)
        return close + len(tag.group(0))

    def _body(self, i: int, end: int) -> None:
        """A stored body: only explicit placeholder forms (and their escapes) count."""
        text, out = self.text, self.out
        while (m := _BODY_INTERESTING.search(text, i, end)) is not None:
            i = m.start()
            if (e := _ESCAPED.match(text, i, end)) is not None and ":" in e.group(0):
                out.edits.append(Edit(i, e.end(), "escape", ""))
                i = e.end()
            elif (p := _PLACEHOLDER.match(text, i, end)) is not None and p.group(2):
                out.edits.append(Edit(i, p.end(), p.group(2).lower(), p.group(1)))
                i = p.end()
            else:
                i += 1

    def _quoted(self, i: int, end: int, escapes: bool) -> int:
        """The offset after the closing quote; a doubled quote stays inside."""
        text = self.text
        quote = text[i]
        j = i + 1
        while True:
            k = text.find(quote, j, end)
            if escapes:
                b = text.find("\\", j, end)
                if 0 <= b < k or (k < 0 <= b):
                    j = b + 2
                    continue
            if k < 0:
                what = "string" if quote == "'" else "quoted identifier"
                raise self.fail(i, f"{what} opened here is never closed")
            if text.startswith(quote, k + 1):
                j = k + 2
                continue
            return k + 1

    def _block_comment(self, i: int, end: int) -> int:
        """Block comments nest in PostgreSQL, unlike in C."""
        text = self.text
        depth, j = 0, i
        while True:
            o = text.find("/*", j, end)
            c = text.find("*/", j, end)
            if c < 0:
                raise self.fail(i, "/* comment is never closed")
            if 0 <= o < c:
                depth += 1
                j = o + 2
            else:
                depth -= 1
                j = c + 2
                if depth == 0:
                    return j

    def _meta(self, i: int, end: int) -> int:
        text = self.text
        nl = text.find("\n", i, end)
        eol = end if nl < 0 else nl
        word = text[i + 1:eol].split(maxsplit=1)[0] if text[i + 1:eol].strip() else ""
        at_line_start = text[text.rfind("\n", 0, i) + 1:i].strip() == ""
        if word in SKIPPED_META and at_line_start:
            self.out.skipped.append((i, eol))
            return eol
        shown = "\\" + word
        raise self.fail(i, f"psql meta-command {shown} is not supported; only "
                           + ", ".join("\\" + w for w in SKIPPED_META)
                           + " lines (from pg_dump) are allowed and skipped")

    def _copy(self, start: int, semicolon: int) -> int:
        """After ``COPY …;``: take its data if it reads FROM STDIN."""
        text, out = self.text, self.out
        try:
            node = pg_parser.parse_sql(out.masked(start, semicolon))[0].stmt
        except pg_parser.ParseError as exc:
            raise self.fail(start, f"COPY statement does not parse: {exc.args[0]}") from None
        if getattr(node, "filename", None) is not None or getattr(node, "is_program", False):
            return semicolon + 1  # server-side file or program: an ordinary statement
        if not getattr(node, "is_from", False):
            raise self.fail(start, "COPY … TO STDOUT has nowhere to write in a migration; "
                                   "use COPY … TO a server file, or remove it")
        rest = _REST_OF_COPY_LINE.match(text, semicolon + 1)
        if rest is None:
            raise self.fail(semicolon, "COPY … FROM STDIN must end its line; "
                                       "its data starts on the next line")
        data_start = rest.end()
        stop = _END_OF_DATA.search(text, data_start)
        if stop is None:
            raise self.fail(start, "COPY … FROM STDIN data has no terminating \\. line")
        nl = text.find("\n", stop.end())
        resume = len(text) if nl < 0 else nl + 1
        out.copies.append(CopyData(start, semicolon, data_start, stop.start(), resume))
        out.protected.append((data_start, stop.start()))
        return resume
