"""The versioned config bundle a dev or prod host converges to (infra/hostagent/apply.py).

Everything that may change on day 2 travels in the bundle, never in user-data:
rendered files (with what a change of each needs), the roles SQL, the slots
the primary keeps, the units to enable. Its `version` is the SHA-256 of the
rest, computed the way pgp-apply checks it, so a host can tell a bundle it has
applied from a new one, and `pulumi up` can wait for each host to report it.

The bundle holds secrets (verifiers, passfiles, TLS keys): it is built inside
`Output.apply` and stored only as a Pulumi secret and in the host's own secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from infra.hostagent.apply import FORMAT, bundle_version

POSTGRES_UNIT = "pg-platform-postgresql.service"
PGBOUNCER_UNIT = "pgbouncer.service"
# With `ha.manager: patroni` (infra/backends/aws_ha.py): Patroni instead of POSTGRES_UNIT.
PATRONI_UNIT = "pg-platform-patroni.service"
ETCD_UNIT = "pg-platform-etcd.service"


@dataclass(frozen=True)
class BundleFile:
    """One file of the bundle; `then` lists what a change needs, in pgp-apply's words:
    `reload:<unit>`, `restart:<unit>`, `daemon-reload`."""

    path: str
    content: str
    owner: str = "root"
    mode: str = "0644"
    then: tuple[str, ...] = ()
    dir_mode: str = ""

    def as_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"path": self.path, "content": self.content,
                                "owner": self.owner, "mode": self.mode,
                                "then": list(self.then)}
        if self.dir_mode:
            item["dir_mode"] = self.dir_mode
        return item


def reload_postgres() -> tuple[str, ...]:
    """pgp-apply reloads, then restarts only if a changed setting is pending_restart."""
    return (f"reload:{POSTGRES_UNIT}",)


def make(host: str, files: Iterable[BundleFile], *, postgres: dict[str, Any], sql: str = "",
         slots: Sequence[str] = (), enable: Sequence[str] = (),
         report: dict[str, str] | None = None,
         patroni: dict[str, Any] | None = None,
         services: dict[str, dict[str, list[str]]] | None = None) -> dict[str, Any]:
    """The bundle as pgp-apply reads it, with its version. `patroni`: what it runs
    instead of the `postgres` unit with `ha.manager: patroni` (infra/backends/aws_ha.py);
    `services`: each unit's own commands where there is no systemd (a dev container),
    left out on prod."""
    by_path: dict[str, BundleFile] = {}
    for f in files:
        if f.path in by_path:
            raise ValueError(f"bundle for {host}: two files for {f.path}")
        by_path[f.path] = f
    bundle: dict[str, Any] = {
        "format": FORMAT, "host": host, "postgres": postgres,
        "files": [by_path[p].as_dict() for p in sorted(by_path)],
        "sql": sql, "slots": list(slots), "enable": list(enable), "report": report or {},
    }
    if patroni:
        bundle["patroni"] = patroni
    if services:
        bundle["services"] = services
    bundle["version"] = bundle_version(bundle)
    return bundle


def dumps(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, sort_keys=True)


def version_of(text: str) -> str:
    return str(json.loads(text)["version"])
