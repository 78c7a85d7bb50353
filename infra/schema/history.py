"""The history table: what has been applied where, by whom, and how long it took.

One table for all three tracks and every tenant schema, in its own schema
(``pgplatform`` by default) so that dropping ``public`` or a tenant schema
never loses it, and so that a single query can tell what every tenant lacks.
A partial unique index makes "applied once" a database fact, not only a
promise of the advisory lock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from infra.schema.files import Kind, Migration, Track

TABLE = "schema_history"


def table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TABLE))


def regclass_name(schema: str) -> str:
    """The quoted name for to_regclass, built by psycopg's identifier quoting."""
    return f"{sql.Identifier(schema).as_string()}.{sql.Identifier(TABLE).as_string()}"


def ensure(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the history schema and table if missing (run under the writer lock)."""
    hist = table(schema)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("""
            CREATE TABLE IF NOT EXISTS {hist} (
                installed_rank bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                track          text NOT NULL CHECK (track IN ('schema', 'tenant', 'policies')),
                tenant_schema  text,
                version        text NOT NULL DEFAULT '',
                description    text NOT NULL,
                kind           text NOT NULL CHECK (kind IN ('versioned', 'repeatable')),
                script         text NOT NULL,
                checksum       text NOT NULL,
                applied_by     text NOT NULL DEFAULT current_user,
                applied_at     timestamptz NOT NULL DEFAULT now(),
                execution_ms   integer NOT NULL,
                success        boolean NOT NULL,
                CHECK ((track = 'tenant') = (tenant_schema IS NOT NULL))
            )""").format(hist=hist))
        conn.execute(sql.SQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} "
            "(track, coalesce(tenant_schema, ''), version) "
            "WHERE kind = 'versioned' AND success").format(
                sql.Identifier(f"{TABLE}_once"), hist))
        conn.execute(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} (track, script, installed_rank) "
            "WHERE kind = 'repeatable'").format(sql.Identifier(f"{TABLE}_repeatable"), hist))


def record(conn: psycopg.Connection[Any], schema: str, m: Migration,
           tenant_schema: str | None, execution_ms: int) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (track, tenant_schema, version, description, kind, script, "
                "checksum, execution_ms, success) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)").format(table(schema)),
        (m.track.value, tenant_schema, m.version, m.description, m.kind.value, m.script,
         m.checksum, execution_ms))


@dataclass(frozen=True)
class Applied:
    """The latest successful history row of one once-per-database migration."""

    track: Track
    kind: Kind
    key: str
    script: str
    checksum: str
    applied_by: str
    applied_at: dt.datetime
    execution_ms: int


def database_rows(conn: psycopg.Connection[Any], schema: str) -> sql.Composed:
    """The query for the latest row per schema/policies migration."""
    return sql.SQL("""
        SELECT DISTINCT ON (track, key) track, kind, key, script, checksum,
               applied_by, applied_at, execution_ms
        FROM (SELECT *, CASE WHEN kind = 'versioned' THEN version ELSE script END AS key
              FROM {} WHERE track <> 'tenant' AND success) h
        ORDER BY track, key, installed_rank DESC""").format(table(schema))


def parse_applied(rows: list[tuple[object, ...]]) -> dict[tuple[Track, str], Applied]:
    out: dict[tuple[Track, str], Applied] = {}
    for track, kind, key, script, chk, by, at, ms in rows:
        a = Applied(Track(str(track)), Kind(str(kind)), str(key), str(script), str(chk),
                    str(by), at, int(ms))  # type: ignore[arg-type, call-overload]
        out[(a.track, a.key)] = a
    return out


def realign(conn: psycopg.Connection[Any], schema: str, m: Migration) -> int:
    """Make recorded checksums of an edited versioned file match it (repair)."""
    cur = conn.execute(
        sql.SQL("UPDATE {} SET checksum = %s, description = %s "
                "WHERE track = %s AND version = %s AND kind = 'versioned' "
                "AND checksum <> %s").format(table(schema)),
        (m.checksum, m.description, m.track.value, m.version, m.checksum))
    return cur.rowcount


def forget(conn: psycopg.Connection[Any], schema: str, track: Track, version: str) -> int:
    """Drop the rows of a versioned migration whose file is gone (repair)."""
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE track = %s AND version = %s "
                "AND kind = 'versioned'").format(table(schema)),
        (track.value, version))
    return cur.rowcount
