"""Probes: one short, read-only look at each part of a running stack.

Every probe catches its own failure and records it on the result, so one
unreachable host never hides the state of the others. Connections use a
short timeout: a health check that hangs is worse than one that says "down".
Error texts come from libpq or PgBouncer and never contain the DSN's password.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from infra.errors import PlatformError
from infra.health.model import BACKUP_TYPES, Backups, Node, Pool, Pooler, Schema
from infra.hostctl.pgbackrest import PgBackRest
from infra.schema import engine
from infra.schema.tenants import REGISTRY

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3
READ_ONLY_TIMEOUT = 8.0
_NODE_SQL = """
SELECT CASE WHEN pg_is_in_recovery() THEN 'replica' ELSE 'primary' END,
       current_setting('server_version'),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8,
       (SELECT status FROM pg_stat_wal_receiver)
"""
# Seen from the primary: each standby's state and how many WAL bytes it has yet to replay.
_REPLICATION_SQL = """
SELECT application_name, state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
FROM pg_stat_replication
"""
_ARCHIVER_SQL = """
SELECT last_archived_wal,
       EXTRACT(EPOCH FROM now() - last_archived_time)::float8,
       failed_count,
       last_failed_time IS NOT NULL
         AND last_failed_time > COALESCE(last_archived_time, '-infinity')
FROM pg_stat_archiver
"""


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                           application_name="pg-platform health", **kwargs)


def probe_node(name: str, dsn: str, expected_role: str) -> Node:
    node = Node(name=name, expected_role=expected_role)
    try:
        with _connect(dsn) as conn:
            row = conn.execute(_NODE_SQL).fetchone()
    except psycopg.Error as exc:
        node.error = _error(exc)
        return node
    assert row is not None
    node.up = True
    (node.role, node.version, node.connections, node.max_connections,
     node.reserved_connections, node.lag_seconds, receiver) = row
    node.replication_state = receiver if node.role == "replica" else None
    return node


def probe_nodes(primary_dsn: str, replica_dsns: Sequence[str]) -> list[Node]:
    """The primary, then replica-1..N in the order of the `replica_dsns` output.

    Replica i streams as application_name ``replica_<i>`` (its slot name); the
    primary's view of it supplies the state and the lag in bytes.
    """
    nodes = [probe_node("primary", primary_dsn, "primary")]
    for i, dsn in enumerate(replica_dsns, start=1):
        nodes.append(probe_node(f"replica-{i}", dsn, "replica"))
    if not nodes[0].up or len(nodes) == 1:
        return nodes
    try:
        with _connect(primary_dsn) as conn:
            seen = {r[0]: (r[1], r[2]) for r in conn.execute(_REPLICATION_SQL).fetchall()}
    except psycopg.Error as exc:
        logger.warning("could not read pg_stat_replication: %s", _error(exc))
        return nodes
    for i, node in enumerate(nodes[1:], start=1):
        state, lag = seen.get(f"replica_{i}", (None, None))
        if state is not None:
            node.replication_state = state
        elif node.up:
            node.replication_state = node.replication_state or "not connected to the primary"
        node.lag_bytes = int(lag) if lag is not None else None
    return nodes


def probe_pooler(admin_dsn: str) -> Pooler:
    """SHOW POOLS on PgBouncer's admin console (simple query protocol only)."""
    pooler = Pooler()
    try:
        with _connect(admin_dsn, cursor_factory=psycopg.ClientCursor) as conn, \
                conn.cursor() as cur:
            cur.execute("SHOW POOLS")
            cols = [c.name for c in cur.description or ()]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    except psycopg.Error as exc:
        pooler.error = _error(exc)
        return pooler
    pooler.up = True
    for r in rows:
        if r["database"] == "pgbouncer":
            continue  # the admin console's own pseudo-pool
        pooler.pools.append(Pool(
            database=r["database"], user=r["user"], cl_active=int(r["cl_active"]),
            cl_waiting=int(r["cl_waiting"]), sv_active=int(r["sv_active"]),
            sv_idle=int(r["sv_idle"]),
            maxwait_seconds=int(r["maxwait"]) + int(r.get("maxwait_us") or 0) / 1e6))
    return pooler


def probe_read_only(pooler_dsn: str, database: str) -> str:
    """Log in to `<database>_ro` through PgBouncer; "" when a replica answered.

    PgBouncer may accept the login and then queue the query until a server
    connection exists (query_wait_timeout, 120 s by default), and it ignores a
    cancel for a client that has no server yet. So the probe runs in a daemon
    thread and is given up after READ_ONLY_TIMEOUT: with every replica down,
    health answers in seconds.
    """
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(_read_only(pooler_dsn, database)),
                              name="read-only pool probe", daemon=True)
    worker.start()
    worker.join(READ_ONLY_TIMEOUT)
    return result[0] if result else f"no replica answered within {READ_ONLY_TIMEOUT:.0f}s"


def _read_only(pooler_dsn: str, database: str) -> str:
    try:
        with _connect(make_conninfo(pooler_dsn, dbname=f"{database}_ro"),
                      prepare_threshold=None) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        return _error(exc)
    return "" if row and row[0] is True else "it answered from a server not in recovery"


def backup_ages(info: dict[str, Any], now: float | None = None) -> tuple[dict[str, float | None],
                                                                         dict[str, int]]:
    """Age of the newest backup of each type, from a stanza of `pgbackrest info --output=json`."""
    now = time.time() if now is None else now
    ages: dict[str, float | None] = dict.fromkeys(BACKUP_TYPES)
    counts = dict.fromkeys(BACKUP_TYPES, 0)
    for b in info.get("backup", []):
        kind = b.get("type")
        stop = (b.get("timestamp") or {}).get("stop")
        if kind not in counts or stop is None:
            continue
        counts[kind] += 1
        age = max(now - float(stop), 0.0)
        current = ages[kind]
        ages[kind] = age if current is None else min(current, age)
    return ages, counts


def probe_backups(primary_dsn: str, pgbackrest_config: Path | None, stanza: str,
                  exec_prefix: tuple[str, ...] = ()) -> Backups:
    """pgbackrest info for the backups (where its config is on this machine, or, with
    `exec_prefix`, where the prefix runs it: dev's primary container); the archiver
    statistics from the primary."""
    backups = Backups()
    errors: list[str] = []
    if pgbackrest_config is not None:
        try:
            info = PgBackRest(config=pgbackrest_config, stanza=stanza,
                              exec_prefix=exec_prefix).info()
            if not info:
                raise PlatformError(f"stanza {stanza!r} is not in the repository")
            backups.age_seconds, backups.count = backup_ages(info)
            backups.available = True
            backups.source = f"pgbackrest info ({pgbackrest_config})" + (
                f" through {shlex.join(exec_prefix)}" if exec_prefix else "")
        except (PlatformError, OSError, ValueError) as exc:
            errors.append(f"pgbackrest info: {_error(exc)}")
    else:
        errors.append("no pgBackRest config for this stack on this machine")
    try:
        with _connect(primary_dsn) as conn:
            row = conn.execute(_ARCHIVER_SQL).fetchone()
        assert row is not None
        (backups.last_archived_wal, backups.last_archived_age_seconds,
         backups.archive_failed_count, backups.archive_failing) = row
    except psycopg.Error as exc:
        errors.append(f"pg_stat_archiver: {_error(exc)}")
    backups.error = "; ".join(errors) or None
    return backups


def probe_schema(primary_dsn: str, sql_dir: Path, tenants: Sequence[Any],
                 app_role: str) -> Schema:
    """Pending files and active tenants, through the SQL engine's own plan."""
    schema = Schema()
    try:
        opts = engine.Options.build(sql_dir, tenants, app_role=app_role)
        plan, rows = engine.status(primary_dsn, opts)
    except (PlatformError, psycopg.Error) as exc:
        schema.error = _error(exc)
        return schema
    schema.available = True
    schema.pending = [f"{r.track} {r.version} {r.description} ({r.state})"
                      for r in rows if r.state.startswith("pending")]
    schema.pending += [f"tenant {t.slug} (not registered)" for t in plan.unregistered]
    schema.problems = plan.problems()
    schema.tenants = _active_tenants(primary_dsn) if plan.registry_exists else 0
    return schema


def _active_tenants(dsn: str) -> int | None:
    try:
        with _connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {REGISTRY} WHERE is_active").fetchone()
    except psycopg.Error as exc:
        logger.warning("could not count tenants: %s", _error(exc))
        return None
    return int(row[0]) if row else 0
