"""The tenant quota: how many tenants ``public.create_tenant`` may register.

Kept in ``public.platform_limits`` (sql/schema/V0005) and written by the
engine from the stack config on every apply, so that changing the quota needs
no migration. Runtime creation (tenant_admin) is then refused past it.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

logger = logging.getLogger(__name__)


def sync(conn: psycopg.Connection[Any], quota: int) -> bool:
    """Set the quota where the table exists; True when it changed."""
    row = conn.execute("SELECT to_regclass('public.platform_limits') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return False
    with conn.transaction():
        cur = conn.execute("UPDATE public.platform_limits SET max_tenants = %s "
                           "WHERE max_tenants IS DISTINCT FROM %s", (quota, quota))
    if cur.rowcount:
        logger.info("tenant quota set to %d", quota)
    return bool(cur.rowcount)
