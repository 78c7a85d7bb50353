"""The settings a restored copy needs to replay its WAL as a hot standby.

A server in recovery with `hot_standby = on` needs max_connections,
max_worker_processes, max_wal_senders, max_prepared_transactions and
max_locks_per_transaction at least as high as the primary had when it wrote
the WAL being replayed. The backup's own postgresql.conf has the values of the
day it was taken; a later increase on the primary is a PARAMETER_CHANGE record
in the WAL, and replaying it with the old values pauses recovery for good
("hot standby is not possible because of insufficient parameter settings").

So a restore starts the copy with, for each setting, the largest of: the
backup's control file (pg_controldata of the restored data directory), the
primary's current value when it can be asked, and the copy's own
configuration. Should the WAL still hold a higher value (raised, then lowered
again, on the primary), the server says so in its log, naming the setting and
the value it needs: `raised_by_log` reads that, and the restore restarts the
copy with it (infra/backup/restore.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import psycopg

from infra.hostctl.postgres import PG_VERSION, bin_dir
from infra.hostctl.proc import run

# GUC -> its line in pg_controldata's output.
CONTROLDATA = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}
PARAMETERS = tuple(CONTROLDATA)
_LOWER = re.compile(r"(\w+) = (\d+) is a lower setting than on the primary server, "
                    r"where its value was (\d+)")
_INSUFFICIENT = "because of insufficient parameter settings"


def parse_controldata(text: str) -> dict[str, int]:
    """The hot-standby settings recorded in a control file, from pg_controldata's output."""
    lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    out = {}
    for guc, label in CONTROLDATA.items():
        value = lines.get(label, "").strip()
        if value.isdigit():
            out[guc] = int(value)
    return out


def controldata(data_dir: Path, version: int = PG_VERSION) -> dict[str, int]:
    """pg_controldata of a (stopped) data directory, as the service user who owns it."""
    text = run([str(bin_dir(version) / "pg_controldata"), "-D", str(data_dir)],
               what=f"pg_controldata of {data_dir}", env={"LC_ALL": "C"})
    return parse_controldata(text)


def current_settings(dsn: str) -> dict[str, int]:
    """The primary's values now; {} when it cannot be reached (the restore goes on)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute("SELECT name, setting::int FROM pg_settings "
                                "WHERE name = ANY(%s)", (list(PARAMETERS),)).fetchall()
    except psycopg.Error:
        return {}
    return {str(name): int(value) for name, value in rows}


def merged(*sources: Mapping[str, int]) -> dict[str, int]:
    """For each setting, the largest value any source has."""
    out: dict[str, int] = {}
    for src in sources:
        for guc in PARAMETERS:
            if guc in src:
                out[guc] = max(out.get(guc, 0), int(src[guc]))
    return out


def paused_for_parameters(log_text: str) -> bool:
    """True when the server said recovery cannot go on with its settings."""
    return _INSUFFICIENT in log_text


def raised_by_log(log_text: str, current: Mapping[str, int]) -> dict[str, int]:
    """Settings the server's log says are below what the WAL needs, with the needed values.

    Only those that are higher than `current` are returned: an empty result
    means the log names nothing new (and a restart would not help).
    """
    out: dict[str, int] = {}
    for name, _have, needed in _LOWER.findall(log_text):
        if name in PARAMETERS and int(needed) > max(current.get(name, 0), out.get(name, 0)):
            out[name] = int(needed)
    return out


def settings_text(values: Mapping[str, int]) -> str:
    """postgresql.auto.conf lines; a later line for the same setting wins."""
    lines = ["# pg-platform restore: hot-standby settings at least the primary's "
             "(infra/backup/hot_standby.py)."]
    lines += [f"{guc} = {values[guc]}" for guc in PARAMETERS if guc in values]
    return "\n".join(lines) + "\n"
