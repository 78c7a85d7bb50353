"""The stack's TimescaleDB settings applied to a database, in place.

All logic lives in SQL (`public.timescaledb_apply_policies`, defined by
sql/policies/R__timescaledb.sql): it creates missing policies and alters the
others with alter_job, so job ids survive a change. Without TimescaleDB it
does nothing, and `apply` reports the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg

from infra.timescaledb.presence import presence

logger = logging.getLogger(__name__)

_ARGS = ("chunk_interval", "compress_after", "retention", "refresh_start", "refresh_end",
         "refresh_every")
_CALL = ("CALL public.timescaledb_apply_policies("
         + ", ".join(f"{a} => %({a})s::interval" for a in _ARGS) + ")")
_JOBS = """
SELECT proc_name, job_id, schedule_interval::text, config::text
FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id
"""


def apply(dsn: str, settings: Mapping[str, str]) -> dict[str, Any]:
    """Bring the policies to `settings` (TimescaleSettings.policy_inputs()).

    :returns: ``{"mode": "timescaledb"|"fallback", "jobs": [...]}`` for the state.
    """
    missing = [a for a in _ARGS if a not in settings]
    if missing:
        raise ValueError(f"timescaledb policy settings lack {', '.join(missing)}")
    with psycopg.connect(dsn, autocommit=True, application_name="pg-platform policies") as conn:
        if not presence(conn).usable:
            logger.info("TimescaleDB not usable here: events keeps the plain-table fallback")
            return {"mode": "fallback", "jobs": []}
        conn.execute(_CALL, dict(settings))
        jobs = [f"{r[0]} {r[1]} every {r[2]} {r[3]}" for r in conn.execute(_JOBS).fetchall()]
    return {"mode": "timescaledb", "jobs": jobs}
