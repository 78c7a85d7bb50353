"""testinfra against a running stack: `pytest tests/infra --stack local`.

The hosts come from the stack's outputs (`pulumi stack output --json
--show-secrets`): `local://` for the local backend, the `testinfra_hosts`
output for dev (docker://) and prod (ssh://). See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import testinfra
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import config
from tests.infra.inventory import (
    Host,
    StackAccess,
    StackSnapshot,
    exported_inventory,
    local_inventory,
)

ROOT = Path(__file__).resolve().parents[2]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pg-platform stack")
    group.addoption("--stack", default="local", help="the stack whose hosts to check")
    group.addoption("--project-dir", default=str(ROOT), type=Path,
                    help="the Pulumi project folder holding Pulumi.<stack>.yaml")
    group.addoption("--stack-json", default=None, type=Path,
                    help="read settings, outputs and passwords from this file instead of "
                         "a Pulumi stack (tests/infra/inventory.py StackSnapshot)")
    group.addoption("--max-lag-seconds", default=5.0, type=float,
                    help="how long a replica may take to replay a fresh write")
    group.addoption("--max-full-backup-age-hours", default=8 * 24.0, type=float,
                    help="the newest full backup must be younger than this "
                         "(the default schedule takes one weekly)")


# How testinfra reaches ssh:// hosts: pytest-testinfra's own --ssh-config,
# --ssh-identity-file, --sudo and --sudo-user, passed to every host `remote` makes.
_REMOTE: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    for opt in ("ssh_config", "ssh_identity_file", "sudo", "sudo_user"):
        value = config.getoption(opt, default=None)
        if value:
            _REMOTE[opt] = value


@pytest.fixture(scope="session")
def access(pytestconfig: pytest.Config) -> StackAccess | StackSnapshot:
    snapshot = pytestconfig.getoption("stack_json")
    if snapshot:
        return StackSnapshot(Path(snapshot))
    return StackAccess(stack=pytestconfig.getoption("stack"),
                       project_dir=Path(pytestconfig.getoption("project_dir")).resolve())


@pytest.fixture(scope="session")
def cfg(access: StackAccess | StackSnapshot) -> config.PlatformConfig:
    return access.config()


@pytest.fixture(scope="session")
def outputs(access: StackAccess | StackSnapshot) -> dict[str, Any]:
    out = access.outputs()
    if not out.get("primary_dsn"):
        raise RuntimeError(f"stack {access.stack!r} has no primary_dsn output: is it up?")
    return out


@pytest.fixture(scope="session")
def passwords(access: StackAccess | StackSnapshot) -> dict[str, str]:
    return access.generated_passwords()


@pytest.fixture(scope="session")
def hosts(cfg: config.PlatformConfig, outputs: dict[str, Any],
          passwords: dict[str, str]) -> list[Host]:
    if cfg.backend == "local":
        return local_inventory(cfg, passwords)
    return exported_inventory(outputs)


def _one(hosts: list[Host], role: str) -> Host:
    found = [h for h in hosts if h.role == role]
    assert len(found) == 1, f"expected one {role} host, found {[h.name for h in found]}"
    return found[0]


POSTGRES_ROLES = ("primary", "replica", "node")


@pytest.fixture(scope="session")
def server_dsns(hosts: list[Host], outputs: dict[str, Any]) -> dict[str, str]:
    """A DSN of each PostgreSQL host's own server, by host name: at the address the
    inventory gives (local; as primary_dsn's owner), else the exported DSN naming it
    (primary_dsn; replica_dsns in the inventory's order of the replicas)."""
    postgres = [h for h in hosts if h.role in POSTGRES_ROLES]
    if all(h.address for h in postgres):
        return {h.name: at_address(outputs["primary_dsn"], h.address) for h in postgres}
    replicas = [h.name for h in postgres if h.role == "replica"]
    return {_one(postgres, "primary").name: outputs["primary_dsn"],
            **dict(zip(replicas, outputs["replica_dsns"], strict=True))}


@pytest.fixture(scope="session")
def server_roles(hosts: list[Host], server_dsns: dict[str, str],
                 ca_file: Path) -> dict[str, str]:
    """primary or replica, by host name: as the inventory says, or, for a Patroni node
    (whose role moves with the leader), as its server says (pg_is_in_recovery)."""
    roles = {}
    for host in hosts:
        if host.role == "node":
            with connect(server_dsns[host.name], ca_file) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row is not None
            roles[host.name] = "replica" if row[0] else "primary"
        elif host.role in POSTGRES_ROLES:
            roles[host.name] = host.role
    return roles


@pytest.fixture(scope="session")
def primary(hosts: list[Host], server_roles: dict[str, str]) -> Host:
    found = [h for h in hosts if server_roles.get(h.name) == "primary"]
    assert len(found) == 1, f"expected one primary, found {[h.name for h in found]}"
    return found[0]


@pytest.fixture(scope="session")
def pooler(hosts: list[Host]) -> Host:
    return _one(hosts, "pooler")


@pytest.fixture(scope="session")
def replica_hosts(hosts: list[Host], server_roles: dict[str, str],
                  cfg: config.PlatformConfig) -> list[Host]:
    found = [h for h in hosts if server_roles.get(h.name) == "replica"]
    assert len(found) == cfg.replicas, "the inventory must list every configured replica"
    return found


def at_address(dsn: str, address: str) -> str:
    """`dsn`, dialling `address` ("host:port") instead."""
    host, _, port = address.rpartition(":")
    return make_conninfo(dsn, host=host, port=port)


def remote(host: Host) -> Any:
    """The testinfra host object for an inventory entry (cached by testinfra), with the
    command line's SSH options and sudo for ssh:// hosts."""
    if host.spec.startswith(("ssh://", "paramiko://")):
        return testinfra.get_host(host.spec, **_REMOTE)
    return testinfra.get_host(host.spec)


@pytest.fixture(scope="session")
def ca_file(outputs: dict[str, Any]) -> Iterator[Path]:
    """The platform CA the stack exports, for sslmode=verify-full."""
    pem = outputs.get("ca_cert")
    assert isinstance(pem, str) and "BEGIN CERTIFICATE" in pem, \
        "the stack exports no `ca_cert` output: TLS is not set up"
    with tempfile.TemporaryDirectory(prefix="pgp-infra-ca-") as tmp:
        path = Path(tmp) / "ca.crt"
        path.write_text(pem)
        yield path


def verified(dsn: str, ca_file: Path, **extra: str) -> str:
    """`dsn` with TLS required and the server's name checked against the platform CA."""
    return make_conninfo(dsn, sslmode="verify-full", sslrootcert=str(ca_file), **extra)


@contextlib.contextmanager
def connect(dsn: str, ca_file: Path, **extra: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(verified(dsn, ca_file, **extra), autocommit=True, connect_timeout=10,
                         prepare_threshold=None) as conn:
        yield conn


def as_owner(dsn: str, outputs: dict[str, Any]) -> str:
    """`dsn`'s server, as the owner role of primary_dsn (replica DSNs are the app role's)."""
    owner = conninfo_to_dict(outputs["primary_dsn"])
    return make_conninfo(dsn, user=str(owner["user"]), password=str(owner["password"]))


def superuser_rows(host: Host, cfg: config.PlatformConfig, outputs: dict[str, Any],
                   ca_file: Path, sql: str) -> list[dict[str, Any]]:
    """`sql`'s rows (as JSON objects) read with superuser rights on `host`'s server.

    Where the stack exports a break-glass DSN (local), through it, at the host's own
    address where the inventory gives one (else the DSN's: the primary); where it does not
    (prod: the superuser logs in only by peer on the host's socket), over the host's
    own testinfra connection, as the service user, the way an operator would.
    """
    wrapped = f"SELECT coalesce(json_agg(row_to_json(q)), '[]'::json)::text FROM ({sql}) q"
    dsn = outputs.get("superuser_dsn")
    if dsn and (host.address or host.role == "primary"):
        with connect(at_address(dsn, host.address) if host.address else dsn, ca_file) as conn:
            row = conn.execute(wrapped).fetchone()
        assert row is not None
        text = str(row[0])
    else:
        r = remote(host)
        cmd = shlex.join(["psql", "-X", "-At", "-p", str(cfg.postgres.port), "-d", "postgres",
                          "-c", wrapped])
        if r.user().name != host.service_user:
            cmd = f"runuser -u {shlex.quote(host.service_user)} -- {cmd}"
        text = str(r.check_output(cmd))
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


def privileged_stats(outputs: dict[str, Any]) -> bool:
    """Whether stats_dsn's role sees other sessions' statistics (pg_monitor or more)."""
    return bool(outputs.get("monitor_dsn") or outputs.get("superuser_dsn"))


def stats_dsn(outputs: dict[str, Any]) -> str:
    """The primary as the pg_monitor-only role where the stack has one (local), else the
    owner: statistics views show other sessions' fields to pg_monitor members only."""
    return str(outputs.get("monitor_dsn") or outputs["primary_dsn"])


def as_monitor(dsn: str, outputs: dict[str, Any]) -> str:
    """`dsn`'s server, as stats_dsn's role."""
    who = conninfo_to_dict(stats_dsn(outputs))
    return make_conninfo(dsn, user=str(who["user"]), password=str(who["password"]))


def admin_dsn(cfg: config.PlatformConfig, outputs: dict[str, Any],
              passwords: dict[str, str]) -> str:
    """PgBouncer's console, on the pooler's host and port, as the configured admin user."""
    pooled = conninfo_to_dict(outputs["pooler_dsn"])
    return make_conninfo(outputs["pooler_dsn"], user=cfg.pooler.admin_user,
                         password=passwords[f"{cfg.pooler.admin_user}-password"],
                         dbname="pgbouncer", host=str(pooled["host"]))
