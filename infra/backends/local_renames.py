"""Renames PostgreSQL does in place: the platform database and its owner role.

`postgres.database` used to be a replace: DROP DATABASE ... WITH (FORCE) and a
new empty one, tenants and history gone. `ALTER DATABASE ... RENAME` keeps
every row (and the schema engine's history, so nothing is re-applied);
`ALTER ROLE ... RENAME` keeps every object the owner owns and every grant,
which refer to the role's oid, not its name.

Renaming clears a role's MD5 password (its salt is the name) but not a SCRAM
verifier; the bootstrap step right after sets the verifier for the new name
(infra/roles.py), so the stored secret always matches the role's name.

The app and replication roles are not renamed: applied migrations
(sql/schema/V0005) compare `session_user` with the app role's name as a
literal, so a rename would quietly change what tenants may see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors, sql

from infra.errors import ProcessError

logger = logging.getLogger(__name__)

# Input keys renamed in place, and what they name.
IN_PLACE = {"database": "DATABASE", "owner_role": "ROLE"}
_ATTEMPTS = 20


def pending(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """The keys whose change is a rename (the old value was set by an earlier `up`)."""
    return [k for k in IN_PLACE if olds.get(k) and news.get(k) and olds[k] != news[k]]


def _exists(conn: psycopg.Connection[Any], kind: str, name: str) -> bool:
    query = ("SELECT 1 FROM pg_database WHERE datname = %s" if kind == "DATABASE"
             else "SELECT 1 FROM pg_roles WHERE rolname = %s")
    return conn.execute(query, (name,)).fetchone() is not None


def _rename_database(conn: psycopg.Connection[Any], old: str, new: str) -> None:
    """No session may be in a database that is renamed: close it, end them, rename, reopen."""
    old_id, new_id = sql.Identifier(old), sql.Identifier(new)
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(old_id))
    try:
        for attempt in range(_ATTEMPTS):
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (old,))
            try:
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(old_id, new_id))
                break
            except errors.ObjectInUse:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.25)  # a backend takes a moment to exit after its signal
    finally:
        name = new_id if _exists(conn, "DATABASE", new) else old_id
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


def apply(connect: Callable[[], psycopg.Connection[Any]], olds: dict[str, Any],
          news: dict[str, Any]) -> None:
    """Rename what `pending` lists; a rename already done (a retried `up`) is skipped.

    :raises ProcessError: when both the old and the new name exist, naming the key.
    """
    keys = pending(olds, news)
    if not keys:
        return
    with connect() as conn:
        for key in keys:
            kind, old, new = IN_PLACE[key], olds[key], news[key]
            have_old, have_new = _exists(conn, kind, old), _exists(conn, kind, new)
            if have_old and have_new:
                raise ProcessError(
                    f"pg-platform:postgres.{key}: cannot rename {kind.lower()} {old!r} to "
                    f"{new!r}, which exists already; drop or rename {new!r} first")
            if not have_old:
                continue  # renamed by an earlier, interrupted run (or never made)
            logger.info("renaming %s %s to %s", kind.lower(), old, new)
            if kind == "DATABASE":
                _rename_database(conn, old, new)
            else:
                conn.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)))
