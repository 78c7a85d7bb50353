"""Is TimescaleDB usable here? Installed files, preloaded library, created extension.

It counts as present only when it is installed *and* preloaded: CREATE
EXTENSION of an installed but not preloaded timescaledb raises FATAL and ends
the session, so the SQL (schema/V0001) checks shared_preload_libraries too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg


def installed(pg_version: int = 15) -> bool:
    """The library and its control file are where this machine's PostgreSQL loads them."""
    return (Path(f"/usr/lib/postgresql/{pg_version}/lib/timescaledb.so").exists()
            and Path(f"/usr/share/postgresql/{pg_version}/extension/timescaledb.control")
            .exists())


@dataclass(frozen=True)
class Presence:
    preloaded: bool
    version: str | None  # the created extension's version in this database
    license: str | None

    @property
    def usable(self) -> bool:
        """Hypertables, policies and continuous aggregates work (Timescale License)."""
        return self.preloaded and self.version is not None and self.license == "timescale"


_PRESENCE_SQL = """
SELECT EXISTS (SELECT 1 FROM unnest(string_to_array(current_setting('shared_preload_libraries'),
                                                    ',')) l
               WHERE btrim(l, ' "') ~ '(^|/)timescaledb$'),
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
       current_setting('timescaledb.license', true)
"""


def presence(conn: psycopg.Connection[Any]) -> Presence:
    row = conn.execute(_PRESENCE_SQL).fetchone()
    assert row is not None
    return Presence(preloaded=bool(row[0]), version=row[1], license=row[2])
