"""Names PostgreSQL or pg-platform keep for themselves, and plain-text bounds.

A database called `template1` or a role called `pg_evil` passes an identifier
pattern but breaks the platform (or is refused by the server halfway through
`up`); a stack value with a newline in it ends up in a rendered file as two
lines. Both are refused here, before any resource exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pglast import keywords

from infra.config.section import key
from infra.errors import ConfigError

# Keywords that cannot name a database or role without quotes in every client
# (psql lines, pgbouncer.ini, libpq strings): reserved and type/function names.
SQL_KEYWORDS = frozenset(keywords.RESERVED_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS)
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1", "pgbouncer"})
# Role names the server refuses or treats specially, and the platform's own roles.
RESERVED_ROLES = frozenset({"public", "none", "current_user", "current_role", "session_user",
                            "postgres", "platform_monitor", "tenant_admin", "platform_tenant",
                            "pgbouncer"})
TENANT_NAME_MAX = 200  # sql/schema/V0003__tenant_registry.sql: CHECK length BETWEEN 1 AND 200


def shown(value: object) -> str:
    """repr of a value, cut short when long (a 500-character name is not echoed whole)."""
    text = repr(value)
    if len(text) > 60:
        size = f" ({len(value)} characters)" if isinstance(value, str) else ""
        return f"{text[:40]}...{text[-8:]}{size}"
    return text


def database_name(where: str, value: str) -> str:
    if value in RESERVED_DATABASES or value.startswith("pg_"):
        raise ConfigError(f"{where}={value!r} is reserved: "
                          f"{', '.join(sorted(RESERVED_DATABASES))} and names starting with "
                          "pg_ belong to PostgreSQL or PgBouncer; choose another database name")
    if value in SQL_KEYWORDS:
        raise ConfigError(f"{where}={value!r}: an SQL keyword; choose a name that needs no "
                          "quoting")
    return value


def role_name(where: str, value: str) -> str:
    if value.startswith("pg_"):
        raise ConfigError(f"{where}={value!r}: role names starting with pg_ are reserved by "
                          "PostgreSQL (CREATE ROLE refuses them)")
    if value in RESERVED_ROLES:
        raise ConfigError(f"{where}={value!r} is reserved: "
                          f"{', '.join(sorted(RESERVED_ROLES))} are PostgreSQL's or "
                          "pg-platform's own roles; choose another role name")
    if value in SQL_KEYWORDS:
        raise ConfigError(f"{where}={value!r}: an SQL keyword; choose a role name that needs "
                          "no quoting")
    return value


def tenant_name(where: str, value: str) -> str:
    if len(value) > TENANT_NAME_MAX:
        raise ConfigError(f"{where}={shown(value)}: at most {TENANT_NAME_MAX} characters "
                          "(public.tenants.name)")
    return value


def _control(text: str) -> str | None:
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return repr(ch)
    return None


def check_plain_text(raw: Any, path: str = "") -> None:
    """Refuse any string anywhere in the stack's settings holding a control character.

    Every value ends up in a rendered file, a DSN or a SQL literal; a trailing
    newline or a tab there splits or changes a line.
    """
    if isinstance(raw, Mapping):
        for name, value in raw.items():
            child = f"{path}.{name}" if path else str(name)
            if isinstance(name, str) and _control(name):
                raise ConfigError(f"{key(child)}: the key holds a control character "
                                  f"{_control(name)}")
            check_plain_text(value, child)
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            check_plain_text(item, f"{path}[{i}]")
    elif isinstance(raw, str):
        bad = _control(raw)
        if bad:
            raise ConfigError(f"{key(path)}={shown(raw)}: holds the control character {bad} "
                              "(a newline, tab or the like); allowed is one line of "
                              "printable text")
