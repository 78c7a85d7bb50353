"""Each dev container's config bundle, and how pgp-apply acts on a container's units.

The same bundle format and applier as prod (infra/backends/host_bundle.py,
infra/hostagent/apply.py). A container has no systemd, so each bundle names its
units' commands (`services`): PostgreSQL through `pg_ctl` and the rendered
start script, PgBouncer through a small control script. pgp-apply runs them as
root in the container; the servers run as `postgres`. The PgBouncer container
has no PostgreSQL, so its bundle has no `postgres` section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from infra.backends.docker_delivery import STATUS_FILE
from infra.backends.host_bundle import BundleFile, dumps, make

Services = dict[str, dict[str, list[str]]]
OS_USER = "postgres"


def as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *cmd]


def postgres_services(unit: str, *, bin_dir: str, data_dir: str, start_script: str,
                      log_file: str) -> Services:
    """`start` runs the start script (first-start bootstrap, then `pg_ctl start`); a restart
    keeps the options the server was started with (postmaster.opts). Every command logs to
    `log_file`, so none holds pgp-apply's output pipe open."""
    pg_ctl = f"{bin_dir}/pg_ctl"
    return {unit: {
        "is-active": as_postgres(pg_ctl, "status", "-D", data_dir),
        "start": as_postgres("bash", start_script),
        "reload": as_postgres(pg_ctl, "reload", "-D", data_dir),
        "restart": as_postgres(pg_ctl, "restart", "-D", data_dir, "-w", "-t", "300",
                               "-m", "fast", "-l", log_file),
        "stop": as_postgres(pg_ctl, "stop", "-D", data_dir, "-w", "-t", "50", "-m", "fast"),
    }}


def pooler_services(unit: str, ctl: str) -> Services:
    """templates/docker-pgbouncer-ctl.sh.j2's verbs; `enable` starts it if it is not running."""
    verbs = {"is-active": "status", "start": "start", "stop": "stop", "reload": "reload",
             "reload-or-restart": "reload", "restart": "restart", "enable": "start"}
    return {unit: {verb: ["bash", ctl, arg] for verb, arg in verbs.items()}}


def container_bundle(name: str, files: Mapping[str, str], *, private: frozenset[str],
                     then: Mapping[str, tuple[str, ...]], services: Services,
                     postgres: dict[str, Any] | None = None, sql: str = "",
                     slots: Sequence[str] = (), enable: Sequence[str] = (),
                     status_file: str = STATUS_FILE,
                     patroni: dict[str, Any] | None = None) -> str:
    """The JSON bundle of container `name`: `private` files are the server user's, 0600
    (keys, passfiles, PgBouncer's auth file, patroni.yml), the others root's, 0644.
    `patroni`: the applier's Patroni section (infra/backends/docker_ha.py, applier_spec)."""
    items = [BundleFile(path, text, *((OS_USER, "0600") if path in private else ("root", "0644")),
                        then=then.get(path, ()))
             for path, text in files.items()]
    return dumps(make(name, items, postgres=postgres or {}, sql=sql, slots=slots,
                      enable=enable, report={"file": status_file}, services=services,
                      patroni=patroni))
