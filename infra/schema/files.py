"""Migration files on disk: names, kinds, directives and checksums.

Pure functions only, so that the rules users must learn (how a file is named,
what makes its checksum change) are unit-testable without a database.

A file name is either ``V<version>__<description>.sql`` (versioned, applied
once, in version order) or ``R__<description>.sql`` (repeatable, re-applied
whenever its checksum changes). Versions are dot- or underscore-separated
integers compared as numbers, with trailing zeros ignored, so ``V0001``,
``V1`` and ``V1.0`` are the same version and ``V1_10`` sorts after ``V1_9``.
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import MigrationError, MigrationRefused
from infra.schema import lexer, sqltext

DIRECTIVE_PREFIX = "pg-platform:"
NONTRANSACTIONAL = "nontransactional"
NO_PLACEHOLDERS = "no-placeholders"
KNOWN_DIRECTIVES = (NONTRANSACTIONAL, NO_PLACEHOLDERS)
CHECKSUM_VERSION = 2

_VERSIONED = re.compile(r"^V(?P<version>\d+(?:[._]\d+)*)__(?P<desc>[^/]+)\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<desc>[^/]+)\.sql$")


class Kind(enum.StrEnum):
    VERSIONED = "versioned"
    REPEATABLE = "repeatable"


class Track(enum.StrEnum):
    """The three folders of ``sql/``, in the order `apply` runs them."""

    SCHEMA = "schema"
    TENANT = "tenant"
    POLICIES = "policies"

    @property
    def allowed_kinds(self) -> tuple[Kind, ...]:
        # The tenant track is versioned only: a repeatable re-run in thousands of
        # schemas on every edit is rarely what anyone wants. Policies are
        # repeatable only: they describe the desired state, not a step.
        if self is Track.TENANT:
            return (Kind.VERSIONED,)
        if self is Track.POLICIES:
            return (Kind.REPEATABLE,)
        return (Kind.VERSIONED, Kind.REPEATABLE)


@dataclass(frozen=True)
class Migration:
    """One file of a track, read once; `text` is what gets executed.

    `text` is the file without a leading BOM and with LF line endings.
    `checksum` is :data:`CHECKSUM_VERSION` 2; `legacy_checksum` is the one the
    engine recorded before (version 1), still accepted for rows it wrote.
    """

    track: Track
    kind: Kind
    version: str  # canonical, e.g. "1.2"; "" for repeatables
    description: str
    script: str  # file name, e.g. "V0001__extensions.sql"
    path: Path
    checksum: str
    transactional: bool
    text: str
    legacy_checksum: str = ""
    placeholders: bool = True
    scan: lexer.Scan | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def statements(self) -> tuple[sqltext.Statement, ...]:
        """The file's statements, split once per load (see :mod:`infra.schema.sqltext`).

        :raises MigrationRefused: for a syntax error, naming file and line.
        """
        return tuple(sqltext.split(self.text, self.ref, placeholders=self.placeholders,
                                   scanned=self.scan))

    @property
    def key(self) -> str:
        """The identity stored in history: the version, or the script name."""
        return self.version if self.kind is Kind.VERSIONED else self.script

    @property
    def ref(self) -> str:
        """How messages and Pulumi name the file: ``<track>/<script>``."""
        return f"{self.track.value}/{self.script}"

    @property
    def sort_key(self) -> tuple[int, tuple[int, ...], str]:
        kind_rank = 0 if self.kind is Kind.VERSIONED else 1
        return (kind_rank, version_key(self.version) if self.version else (), self.script)


def version_key(version: str) -> tuple[int, ...]:
    """``"1.10"`` -> ``(1, 10)``: versions compare as numbers, not text."""
    return tuple(int(part) for part in re.split(r"[._]", version))


def canonical_version(raw: str) -> str:
    """Leading zeros, trailing zeros and separators do not make a new version:
    V0001, V1 and V1.0 are all version "1" (as in Flyway)."""
    parts = list(version_key(raw))
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return ".".join(str(n) for n in parts)


# The same rule in SQL, for history rows written before trailing zeros were dropped.
VERSION_SQL = r"regexp_replace(version, '(\.0+)+$', '')"


def parse_name(name: str) -> tuple[Kind, str, str] | None:
    """Return (kind, canonical version, description) or None for a non-migration.

    :raises MigrationError: for a ``.sql`` file that looks like a migration but
        is misnamed, so that a typo is not silently skipped.
    """
    if not name.endswith(".sql"):
        return None
    m = _VERSIONED.match(name)
    if m:
        return Kind.VERSIONED, canonical_version(m["version"]), _describe(m["desc"])
    m = _REPEATABLE.match(name)
    if m:
        return Kind.REPEATABLE, "", _describe(m["desc"])
    raise MigrationRefused(
        f"{name}: not a migration name; use V<version>__<description>.sql "
        "(version: integers separated by '.' or '_') or R__<description>.sql")


def _describe(raw: str) -> str:
    return raw.replace("_", " ").strip()


def source_text(raw: str) -> str:
    """What runs: the file without a leading BOM, with LF line endings."""
    return raw.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def normalise(text: str, scan: lexer.Scan | None = None) -> str:
    """Content as checksummed: no BOM, LF line endings, no trailing whitespace
    outside literals, no trailing blank lines.

    Editors and git's autocrlf change these without changing meaning; a
    checksum over them only produces noise (users' most common checksum
    complaint about Flyway). Inside a string, a dollar-quoted body or COPY
    data, trailing whitespace is content, so there it counts.

    :param scan: the scan of ``source_text(text)``, when the caller has it.
    """
    text = source_text(text)
    sc = scan if scan is not None else _lenient_scan(text)
    starts, ends = _union(sc.protected if sc is not None else [])
    lines: list[str] = []
    eol = -1
    for line in text.split("\n"):
        eol += len(line) + 1  # the offset of this line's "\n" (or of the end)
        k = bisect.bisect_right(starts, eol) - 1
        inside = k >= 0 and eol < ends[k]
        lines.append(line if inside else line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def _union(regions: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Nested regions (strings inside a DO body) merged: sorted starts and ends."""
    starts: list[int] = []
    ends: list[int] = []
    for a, b in sorted(regions):
        if ends and a <= ends[-1]:
            ends[-1] = max(ends[-1], b)
        else:
            starts.append(a)
            ends.append(b)
    return starts, ends


def _lenient_scan(text: str) -> lexer.Scan | None:
    try:
        return lexer.scan(text, "<checksum>")
    except MigrationError:
        return None


def legacy_normalise(text: str) -> str:
    """Checksum version 1: every line's trailing whitespace dropped, literals too."""
    text = source_text(text)
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def checksum(text: str, scan: lexer.Scan | None = None) -> str:
    """SHA-256 hex digest of the normalised content (checksum version 2)."""
    return hashlib.sha256(normalise(text, scan).encode("utf-8")).hexdigest()


def legacy_checksum(text: str) -> str:
    """The checksum engines before version 2 recorded (see :func:`legacy_normalise`)."""
    return hashlib.sha256(legacy_normalise(text).encode("utf-8")).hexdigest()


def directives(text: str, script: str) -> frozenset[str]:
    """Read ``-- pg-platform: <word>`` lines from the leading comment block.

    Only the header counts, so a comment further down that mentions the marker
    does not change how a file runs.

    :raises MigrationError: for an unknown directive (likely a typo).
    """
    found: set[str] = set()
    for number, raw in enumerate(legacy_normalise(text).split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        body = line[2:].strip()
        if not body.lower().startswith(DIRECTIVE_PREFIX):
            continue
        word = body[len(DIRECTIVE_PREFIX):].strip().lower()
        if word not in KNOWN_DIRECTIVES:
            raise MigrationRefused(
                f"{script}:{number}: unknown directive {word!r}; allowed: "
                + ", ".join(KNOWN_DIRECTIVES))
        found.add(word)
    return frozenset(found)


def load_track(directory: Path, track: Track) -> list[Migration]:
    """Every migration of one track folder, sorted in the order it applies.

    A missing folder is an empty track, so a project may drop one it does not need.
    """
    if not directory.is_dir():
        return []
    out: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        kind, version, description = parsed
        if kind not in track.allowed_kinds:
            allowed = " or ".join(k.value for k in track.allowed_kinds)
            raise MigrationRefused(
                f"{track.value}/{path.name}: a {kind.value} file in the {track.value} "
                f"track; this track takes {allowed} files only")
        out.append(read_migration(path, track, kind, version, description))
    _refuse_duplicates(out)
    return sorted(out, key=lambda m: m.sort_key)


def read_migration(path: Path, track: Track, kind: Kind, version: str,
                   description: str) -> Migration:
    """Read and scan one file; its statements are parsed later, when needed."""
    ref = f"{track.value}/{path.name}"
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationRefused(f"{ref}: not UTF-8 ({exc})") from None
    marks = directives(raw, ref)
    text = source_text(raw)
    placeholders = NO_PLACEHOLDERS not in marks
    sc = lexer.scan(text, ref, placeholders=placeholders)
    return Migration(track=track, kind=kind, version=version, description=description,
                     script=path.name, path=path, checksum=checksum(text, sc),
                     transactional=NONTRANSACTIONAL not in marks, text=text,
                     legacy_checksum=legacy_checksum(raw), placeholders=placeholders, scan=sc)


def _refuse_duplicates(migrations: Iterable[Migration]) -> None:
    seen: dict[str, str] = {}
    for m in migrations:
        if m.kind is not Kind.VERSIONED:
            continue
        if m.version in seen:
            raise MigrationRefused(
                f"{m.track.value}/{seen[m.version]} and {m.track.value}/{m.script} "
                f"both have version {m.version} (versions compare as numbers, trailing "
                "zeros ignored); each version must be unique per track: renumber one")
        seen[m.version] = m.script


@dataclass(frozen=True)
class MigrationSet:
    """All three tracks of a ``sql/`` folder."""

    schema: tuple[Migration, ...]
    tenant: tuple[Migration, ...]
    policies: tuple[Migration, ...]

    @classmethod
    def load(cls, sql_dir: Path) -> MigrationSet:
        if not sql_dir.is_dir():
            raise MigrationError(f"sql_dir={str(sql_dir)!r}: no such directory; it must "
                                 "hold schema/, tenant/ and policies/ folders")
        return cls(*(tuple(load_track(sql_dir / t.value, t)) for t in Track))

    def all(self) -> Sequence[Migration]:
        return (*self.schema, *self.tenant, *self.policies)

    def fingerprint(self) -> dict[str, str]:
        """``{"<track>/<script>": checksum}``: what Pulumi diffs to show pending files."""
        return {m.ref: m.checksum for m in self.all()}
