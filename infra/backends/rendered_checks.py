"""Every backend's rendered server files go past the real tools before any resource is made.

Called at the top of each backend's `build`, so a file the server, PgBouncer or
pgBackRest would refuse stops the program in `pulumi preview` (and in the
preview `pulumi up` runs first) with the tool's message, before any node is
touched (infra/hostctl/filecheck.py says how each is checked).
"""

from __future__ import annotations

from collections.abc import Mapping

from infra.config import PlatformConfig
from infra.hostctl import filecheck


def check_files(cfg: PlatformConfig, node: str, files: Mapping[str, str]) -> None:
    """`files` maps a path on `node` to the text it receives; others than the three pass."""
    for path, text in files.items():
        where = f"{node} ({path})"
        if path.endswith("/postgresql.conf"):
            filecheck.check_postgresql_conf(text, cfg.postgres.version, where)
        elif path.endswith("/pgbouncer.ini"):
            filecheck.check_pgbouncer_ini(text, where)
        elif path.endswith("/pgbackrest.conf"):
            filecheck.check_pgbackrest_conf(text, cfg.backup.stanza, where)
