"""The history table: what has been applied where, by whom, and how long it took.

One table for all three tracks and every tenant schema, in its own schema
(``pgplatform`` by default) so that dropping ``public`` or a tenant schema
never loses it, and so that a single query can tell what every tenant lacks.
A partial unique index makes "applied once" a database fact, not only a
promise of the advisory lock.

The history schema's own shape is versioned (:data:`ENGINE_MIGRATIONS`,
recorded in ``<schema>.engine_history``), so that a new track or column is a
migration of the engine's own, applied before any user file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from infra.errors import MigrationError, MigrationRefused
from infra.schema.files import CHECKSUM_VERSION, VERSION_SQL, Kind, Migration, Track

TABLE = "schema_history"


def table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TABLE))


def regclass_name(schema: str) -> str:
    """The quoted name for to_regclass, built by psycopg's identifier quoting."""
    return f"{sql.Identifier(schema).as_string()}.{sql.Identifier(TABLE).as_string()}"


# The engine's own metadata migrations, applied in order under the writer lock
# before any user file. Version 1 is the table as engines before this list
# created it (a database with only `schema_history` is at version 1); append a
# new entry for a new track, column or index, never edit an old one.
ENGINE_MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "schema_history table", ("""
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
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS schema_history_once ON {hist} "
        "(track, coalesce(tenant_schema, ''), version) WHERE kind = 'versioned' AND success",
        "CREATE INDEX IF NOT EXISTS schema_history_repeatable ON {hist} "
        "(track, script, installed_rank) WHERE kind = 'repeatable'")),
    # Rows written before carry checksum version 1 (trailing whitespace dropped
    # everywhere); they keep matching files by that rule, so no applied file
    # looks edited after the upgrade.
    (2, "checksum_version column", (
        "ALTER TABLE {hist} ADD COLUMN IF NOT EXISTS checksum_version smallint "
        "NOT NULL DEFAULT 1",)),
)
ENGINE_VERSION = ENGINE_MIGRATIONS[-1][0]
ENGINE_TABLE = "engine_history"


def engine_table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(ENGINE_TABLE))


def engine_regclass_name(schema: str) -> str:
    return f"{sql.Identifier(schema).as_string()}.{sql.Identifier(ENGINE_TABLE).as_string()}"


def engine_version_query(schema: str) -> sql.Composed:
    return sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(engine_table(schema))


def pending_engine_migrations(version: int) -> list[str]:
    """Descriptions of the engine's own migrations a database at `version` lacks."""
    return [f"engine history schema version {v}: {d}"
            for v, d, _ in ENGINE_MIGRATIONS if v > version]


def ensure(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Bring the history schema to :data:`ENGINE_VERSION` (run under the writer lock).

    Returns the engine versions applied. All of them commit together.

    :raises MigrationRefused: when the database is at a newer engine version.
    """
    hist = table(schema)
    done: list[int] = []
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(engine_table(schema)))
        row = conn.execute(engine_version_query(schema)).fetchone()
        current = int(row[0]) if row else 0
        if current == 0 and conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                         (regclass_name(schema),)).fetchone() == (True,):
            # Made by an engine from before versioned metadata: that is version 1.
            conn.execute(sql.SQL("INSERT INTO {} (version, description) VALUES (1, %s)")
                         .format(engine_table(schema)),
                         (ENGINE_MIGRATIONS[0][1] + " (found, made by an earlier engine)",))
            current = 1
        if current > ENGINE_VERSION:
            raise MigrationRefused(too_new(schema, current))
        for version, description, statements in ENGINE_MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(sql.SQL(statement).format(hist=hist))
            conn.execute(sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)")
                         .format(engine_table(schema)), (version, description))
            done.append(version)
    return done


def too_new(schema: str, version: int) -> str:
    return (f"history schema {schema} is at engine version {version}, newer than this "
            f"engine's {ENGINE_VERSION}; upgrade pg-platform before migrating this database")


class RecordError(MigrationError):
    """Writing a history row failed; the message names the file."""


def record(conn: psycopg.Connection[Any], schema: str, m: Migration,
           tenant_schema: str | None, execution_ms: int) -> None:
    """Insert the success row, as the engine's role (a file may have changed it).

    :raises RecordError: naming the file and PostgreSQL's message.
    """
    values = (m.track.value, tenant_schema, m.version, m.description, m.kind.value, m.script,
              m.checksum, CHECKSUM_VERSION, execution_ms)
    # One round trip: the values are quoted by psycopg.sql, never formatted in.
    insert = sql.SQL(
        "RESET SESSION AUTHORIZATION; RESET ROLE; "
        "INSERT INTO {} (track, tenant_schema, version, description, kind, script, checksum, "
        "checksum_version, execution_ms, success) VALUES ({}, true)").format(
        table(schema), sql.SQL(", ").join(sql.Literal(v) for v in values))
    try:
        conn.execute(insert)
    except psycopg.Error as err:
        where = f" for tenant schema {tenant_schema}" if tenant_schema else ""
        message = (err.diag.message_primary or str(err)).strip()
        raise RecordError(f"{m.ref}: its statements ran{where}, but recording it in "
                          f"{schema}.{TABLE} failed: {message}") from err


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
    checksum_version: int = 1

    def matches(self, m: Migration) -> bool:
        """Whether `m` is the file this row recorded, by the row's checksum rule."""
        return self.checksum == (m.checksum if self.checksum_version >= 2
                                 else m.legacy_checksum)


def checksum_version_column(engine_version: int) -> sql.SQL:
    """The row's checksum version, for histories both before and after version 2."""
    return sql.SQL("checksum_version" if engine_version >= 2 else "1")


def database_rows(schema: str, engine_version: int) -> sql.Composed:
    """The query for the latest row per schema/policies migration."""
    return sql.SQL("""
        SELECT DISTINCT ON (track, key) track, kind, key, script, checksum,
               applied_by, applied_at, execution_ms, cv
        FROM (SELECT *, {cv} AS cv,
                     CASE WHEN kind = 'versioned' THEN {v} ELSE script END AS key
              FROM {hist} WHERE track <> 'tenant' AND success) h
        ORDER BY track, key, installed_rank DESC""").format(
        hist=table(schema), v=sql.SQL(VERSION_SQL),
        cv=checksum_version_column(engine_version))


def parse_applied(rows: list[tuple[object, ...]]) -> dict[tuple[Track, str], Applied]:
    out: dict[tuple[Track, str], Applied] = {}
    for track, kind, key, script, chk, by, at, ms, cv in rows:
        a = Applied(Track(str(track)), Kind(str(kind)), str(key), str(script), str(chk),
                    str(by), at, int(ms), int(cv))  # type: ignore[arg-type, call-overload]
        out[(a.track, a.key)] = a
    return out


def realign(conn: psycopg.Connection[Any], schema: str, m: Migration) -> int:
    """Make recorded checksums of an edited versioned file match it (repair)."""
    cur = conn.execute(
        sql.SQL("UPDATE {} SET checksum = %s, checksum_version = %s, description = %s "
                "WHERE track = %s AND {v} = %s AND kind = 'versioned' "
                "AND (checksum, checksum_version) IS DISTINCT FROM (%s, %s)").format(
            table(schema), v=sql.SQL(VERSION_SQL)),
        (m.checksum, CHECKSUM_VERSION, m.description, m.track.value, m.version, m.checksum,
         CHECKSUM_VERSION))
    return cur.rowcount


def forget(conn: psycopg.Connection[Any], schema: str, track: Track, version: str) -> int:
    """Drop the rows of a versioned migration whose file is gone (repair)."""
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE track = %s AND {v} = %s "
                "AND kind = 'versioned'").format(table(schema), v=sql.SQL(VERSION_SQL)),
        (track.value, version))
    return cur.rowcount
