"""One writer at a time: a session advisory lock on a connection of its own.

Why this shape (and not a transaction-scoped lock, or a blocking call):

* ``CREATE INDEX CONCURRENTLY`` waits for every transaction in the database
  that holds a snapshot older than its own. A lock held by an *open
  transaction* (``pg_advisory_xact_lock``) therefore makes a concurrent index
  build in the same run wait forever: the transaction ends only after the
  migration, and the migration waits for the transaction (Flyway #3854).
  A *session* lock taken on a separate autocommit connection holds no
  transaction and no snapshot while it sits idle, so the migration connection
  can build indexes concurrently.
* A second writer that *blocks* inside ``SELECT pg_advisory_lock(…)`` would
  hold a snapshot for as long as it waits, and the first writer's concurrent
  index build would wait for it, while it waits for the first writer: a cycle
  PostgreSQL's deadlock detector cannot see. So waiters poll
  ``pg_try_advisory_lock``, whose brief statements never hold a snapshot
  for long.
* Session locks do not survive PgBouncer transaction pooling, which is one
  reason the engine always connects directly, never through the pooler.

If the process dies, its session ends and PostgreSQL releases the lock.
"""

from __future__ import annotations

import hashlib
import logging
import time
from types import TracebackType
from typing import Any

import psycopg

from infra.errors import MigrationError

logger = logging.getLogger(__name__)


class LockTimeout(MigrationError):
    """Another apply held the migration lock for longer than we would wait."""


def lock_key(namespace: str) -> int:
    """A stable signed 64-bit key, distinct per history schema."""
    digest = hashlib.sha256(f"pg-platform:schema:{namespace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class WriterLock:
    """Context manager: hold the advisory lock for the duration of an apply."""

    def __init__(self, dsn: str, namespace: str, *, timeout: float = 600.0,
                 poll: float = 0.05) -> None:
        self.dsn = dsn
        self.key = lock_key(namespace)
        self.timeout = timeout
        self.poll = poll
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> WriterLock:
        conn = psycopg.connect(self.dsn, autocommit=True,
                               application_name="pg-platform schema lock")
        try:
            self._wait(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def _wait(self, conn: psycopg.Connection[Any]) -> None:
        deadline = time.monotonic() + self.timeout
        delay = self.poll
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row and row[0]:
                logger.debug("migration lock %d taken", self.key)
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"migration lock {self.key} is held by another apply "
                    f"(backend pid {self._holder(conn)}); waited {self.timeout:.0f}s, the "
                    "allowed lock_timeout; retry when it finishes")
            logger.info("waiting for the migration lock held by backend pid %s",
                        self._holder(conn))
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _holder(self, conn: psycopg.Connection[Any]) -> str:
        # A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            "SELECT string_agg(pid::text, ',') FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchone()
        return str(row[0]) if row and row[0] else "unknown"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error as err:  # the session's end releases it anyway
            logger.warning("could not release migration lock %d: %s", self.key, err)
        finally:
            conn.close()
