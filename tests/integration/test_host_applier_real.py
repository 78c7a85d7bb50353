"""pgp-apply against a real PostgreSQL set up as on a prod host.

The cluster is made as pgp-setup makes it: initdb as the `postgres` OS user with
`--auth-local=peer` and no superuser password, the pg_hba that prod renders
(`hostssl` only, the socket for the break-glass role by peer). The applier then
converges real bundles: it runs psql and pg_isready for real through `runuser`
as prod does; only `systemctl` is played by this test, mapping each unit action
onto `pg_ctl` for the same server, so restarts and reloads really happen.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from infra import config, hostctl, render, roles
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec
from infra.backends.host_bundle import POSTGRES_UNIT, BundleFile, make, reload_postgres
from infra.hostagent import apply
from infra.render.roles_sql import bootstrap_script
from tests import ports
from tests.support import scratch_dir, write_tls

OLD = CloudPasswords(owner="own-1", app="app-1", replicator="rep-1", pooler_admin="adm-1",
                     monitor="mon-1", tenant_admin="ta-1")
NEW = CloudPasswords(owner="own-2", app="app-2", replicator="rep-2", pooler_admin="adm-2",
                     monitor="mon-2", tenant_admin="ta-2")


@dataclass
class Host:
    server: hostctl.Server
    base: Path
    cfg: config.PlatformConfig
    tls: render.TlsFiles
    systemctl: list[str]

    def pid(self) -> int:
        return int((self.server.data_dir / "postmaster.pid").read_text().split()[0])

    def run(self, cmd: Sequence[str], stdin: str | None) -> str:
        """Real commands, except systemctl, which drives the same server with pg_ctl."""
        if cmd[0] != "systemctl":
            return apply.run_command(cmd, stdin)
        self.systemctl.append(" ".join(cmd[1:]))
        verb = cmd[1]
        if verb == "is-active":
            if not self.server.is_running():
                raise apply.ApplyError("inactive")
        elif verb == "start":
            self.server.start()
        elif verb == "reload":
            self.server.reload()
        elif verb == "restart":
            self.server.stop()
            self.server.start()
        return ""

    def bundle(self, pw: CloudPasswords, *, slots: Sequence[str], **postgres: object) -> dict[
            str, object]:
        cfg = config.load({"postgres": {"port": self.server.port, "database": "platform_apply",
                                        **postgres}}, "test")
        paths = render.HostPaths(data_dir=str(self.server.data_dir),
                                 socket_dir=str(self.base / "run"))
        conf = render.postgresql_conf(cfg, paths, timescaledb=False, tls=self.tls)
        hba = render.pg_hba_conf(cfg, ("127.0.0.1/32",), ident_map=False, tls=True)
        return make("primary", [
            BundleFile(f"{self.server.data_dir}/postgresql.conf", conf, "postgres", "0600",
                       reload_postgres()),
            BundleFile(f"{self.server.data_dir}/pg_hba.conf", hba, "postgres", "0600",
                       reload_postgres()),
        ], postgres={"unit": POSTGRES_UNIT, "socket_dir": str(self.base / "run"),
                     "port": self.server.port, "os_user": "postgres"},
            sql=bootstrap_script(bootstrap_spec(cfg, pw)), slots=slots)

    def converge(self, bundle: dict[str, object]) -> apply.Outcome:
        self.systemctl.clear()
        return apply.converge(bundle, apply.Host(run=self.run,
                                                 state_file=str(self.base / "applied.json")))

    def login(self, role: str, password: str) -> str:
        dsn = self.server.dsn(role, password, "platform_apply")
        with psycopg.connect(f"{dsn} sslmode=verify-full sslrootcert={self.tls.ca_file}") as c:
            row = c.execute("SELECT current_user").fetchone()
        return str(row[0]) if row else ""


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    base = scratch_dir("pgp-apply-")
    server = hostctl.Server(data_dir=base / "data", port=ports.free_port())
    for owned in (base / "run", base / "data"):
        hostctl.make_dir(owned, 0o700)
        hostctl.chown_service(owned)
    # As pgp-setup does it: no password for the break-glass role, peer on the socket only.
    hostctl.run([str(hostctl.bin_dir() / "initdb"), "-D", str(server.data_dir), "-U",
                 roles.BREAK_GLASS, "--auth-local=peer", "--auth-host=scram-sha-256",
                 "--encoding=UTF8", "--locale=C.UTF-8"], what="initdb")
    tls_dir = base / "tls"
    tls_dir.mkdir()
    tls = write_tls(tls_dir)
    h = Host(server=server, base=base, cfg=config.load({}, "test"), tls=tls, systemctl=[])
    try:
        yield h
    finally:
        server.remove()
        shutil.rmtree(base, ignore_errors=True)


def slots(h: Host) -> list[str]:
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h",
                          str(h.base / "run"), "-p", str(h.server.port), "-d", "postgres",
                          "-c", "SELECT slot_name FROM pg_replication_slots ORDER BY 1"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_first_converge_starts_the_server_and_makes_roles_and_slots(host: Host) -> None:
    out = host.converge(host.bundle(OLD, slots=["replica_1", "replica_2"]))
    assert host.systemctl[1] == f"start {POSTGRES_UNIT}"
    assert out.sql and out.slots == ["created replica_1", "created replica_2"]
    assert slots(host) == ["replica_1", "replica_2"]
    assert host.login("platform_owner", OLD.owner) == "platform_owner"
    assert host.login("app", OLD.app) == "app"


def test_a_reload_setting_reloads_and_keeps_the_server(host: Host) -> None:
    pid = host.pid()
    out = host.converge(host.bundle(OLD, slots=["replica_1", "replica_2"], work_mem="8MB"))
    assert f"reload {POSTGRES_UNIT}" in out.actions
    assert not any(a.startswith("restart") for a in out.actions) and not out.sql
    assert host.pid() == pid


def test_a_restart_setting_restarts_only_because_it_is_pending(host: Host) -> None:
    pid = host.pid()
    out = host.converge(host.bundle(OLD, slots=["replica_1", "replica_2"], work_mem="8MB",
                                    max_connections=120))
    assert f"restart {POSTGRES_UNIT} (max_connections)" in out.actions
    assert host.pid() != pid


def test_rotation_and_a_removed_replica(host: Host) -> None:
    out = host.converge(host.bundle(NEW, slots=["replica_1"], work_mem="8MB",
                                    max_connections=120))
    assert out.sql and out.slots == ["dropped replica_2"]
    assert not any(a.startswith(("reload", "restart")) for a in out.actions)
    assert slots(host) == ["replica_1"]
    for role, old, new in (("platform_owner", OLD.owner, NEW.owner), ("app", OLD.app, NEW.app),
                           (roles.MONITOR, OLD.monitor, NEW.monitor)):
        assert host.login(role, new) == role
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            host.login(role, old)
    log = host.server.log_file.read_text() if host.server.log_file.exists() else ""
    for pw in (*vars(OLD).values(), *vars(NEW).values()):
        assert pw not in log


def test_the_break_glass_role_has_no_password_and_no_network_login(host: Host) -> None:
    with pytest.raises(psycopg.OperationalError):
        host.login(roles.BREAK_GLASS, "")
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h",
                          str(host.base / "run"), "-p", str(host.server.port), "-d", "postgres",
                          "-c", "SELECT rolpassword IS NULL FROM pg_authid "
                          "WHERE rolname = 'postgres'"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "t"
