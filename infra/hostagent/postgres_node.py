"""The host's own PostgreSQL for pgp-apply: reached as the break-glass superuser by
peer on its socket, and the replication slots the primary keeps.

A sibling of infra/hostagent/apply.py: cloud-init writes it beside pgp-apply on
prod, and a dev container's bundle directory holds it too. Stdlib only.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Protocol

SLOT = re.compile(r"^replica_[0-9]+$")
READY_TIMEOUT = 300

Run = Callable[[Sequence[str], str | None], str]


class ApplyError(Exception):
    """A step failed; the message names the step and the file or unit."""


def run_command(cmd: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; its output is returned, its failure raised without the input."""
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ApplyError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-500:]}")
    return proc.stdout


class NodeHost(Protocol):
    """What the server needs of apply.Host: running commands, units and waiting."""

    @property
    def run(self) -> Run: ...

    @property
    def sleep(self) -> Callable[[float], None]: ...

    def unit(self, verb: str, name: str) -> None: ...


class Postgres:
    """The local server, reached as the break-glass superuser by peer on its socket."""

    def __init__(self, host: NodeHost, spec: dict[str, Any]) -> None:
        self.host, self.spec = host, spec

    def _base(self, program: str) -> list[str]:
        return ["runuser", "-u", self.spec["os_user"], "--", program, "-h",
                self.spec["socket_dir"], "-p", str(self.spec["port"])]

    def query(self, text: str) -> str:
        return self.host.run([*self._base("psql"), "-X", "-q", "-At", "-d", "postgres",
                              "-v", "ON_ERROR_STOP=1", "-c", text], None).strip()

    def script(self, text: str) -> None:
        """A psql script on stdin: never on the command line, never in a file."""
        self.host.run([*self._base("psql"), "-X", "-q", "-d", "postgres",
                       "-v", "ON_ERROR_STOP=1", "-f", "-"], text)

    def active(self) -> bool:
        try:
            self.host.unit("is-active", self.spec["unit"])
        except ApplyError:
            return False
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        waited = 0.0
        while True:
            try:
                self.host.run([*self._base("pg_isready"), "-q"], None)
                return
            except ApplyError:
                if waited >= timeout:
                    raise ApplyError(f"{self.spec['unit']}: not accepting connections on "
                                     f"{self.spec['socket_dir']} after {timeout:.0f} s; see "
                                     f"journalctl -u {self.spec['unit']}") from None
                self.host.sleep(2)
                waited += 2

    def in_recovery(self) -> bool:
        return self.query("SELECT pg_is_in_recovery()") == "t"

    def pending_restart(self) -> list[str]:
        found = self.query("SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart")
        return [n for n in found.split(",") if n]


def converge_slots(pg: Postgres, wanted: Sequence[str]) -> list[str]:
    """Create missing slots, replace invalidated ones, drop the removed replicas' slots."""
    done: list[str] = []
    rows = pg.query("SELECT slot_name || ':' || coalesce(wal_status, '') || ':' || active "
                    "FROM pg_replication_slots WHERE slot_type = 'physical'")
    have = {}
    for line in rows.splitlines():
        name, status, flag = line.split(":")
        have[name] = (status, flag == "t")
    for name, (status, active) in sorted(have.items()):
        if SLOT.match(name) and name not in wanted and not active:
            pg.query(f"SELECT pg_drop_replication_slot('{name}')")
            done.append(f"dropped {name}")
        elif name in wanted and status == "lost" and not active:
            pg.query(f"SELECT pg_drop_replication_slot('{name}')")
            del have[name]
            done.append(f"replaced lost {name}")
    for name in wanted:
        if name not in have:
            pg.query(f"SELECT pg_create_physical_replication_slot('{name}', true)")
            done.append(f"created {name}")
    return done
