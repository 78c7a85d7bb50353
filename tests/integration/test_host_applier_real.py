"""pgp-apply against a real PostgreSQL set up as on a prod host, and as in a dev container.

The cluster is made as pgp-setup makes it: initdb as the `postgres` OS user with
`--auth-local=peer` and no superuser password, the pg_hba that prod renders
(`hostssl` only, the socket for the break-glass role by peer). The applier then
converges real bundles: it runs psql and pg_isready for real through `runuser`
as prod does; only `systemctl` is played by this test, mapping each unit action
onto `pg_ctl` for the same server, so restarts and reloads really happen.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from infra import config, hostctl, render, roles
from infra.backends import docker_bundle
from infra.backends import docker_delivery as delivery
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec
from infra.backends.host_bundle import POSTGRES_UNIT, BundleFile, make, reload_postgres
from infra.hostagent import apply, watch
from infra.render.roles_sql import bootstrap_script
from tests import ports
from tests.support import scratch_dir, write_tls

OLD = CloudPasswords(owner="own-1", app="app-1", replicator="rep-1", pooler_admin="adm-1",
                     monitor="mon-1", tenant_admin="ta-1")
NEW = CloudPasswords(owner="own-2", app="app-2", replicator="rep-2", pooler_admin="adm-2",
                     monitor="mon-2", tenant_admin="ta-2")


def tls_login(server: hostctl.Server, tls: render.TlsFiles, role: str, password: str) -> str:
    """current_user of a verify-full TLS login to platform_apply as `role`."""
    dsn = server.dsn(role, password, "platform_apply")
    with psycopg.connect(f"{dsn} sslmode=verify-full sslrootcert={tls.ca_file}") as c:
        row = c.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else ""


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
        return tls_login(self.server, self.tls, role, password)


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


# A dev container's bundle, converged for real through the container's own loop
# (infra/hostagent/watch.py running apply.py from the bundle directory) with the
# dev services table: no systemctl at all; start is the rendered docker-start.sh
# (initdb as pgp-setup does, then pg_ctl start), reload and restart are pg_ctl.

@dataclass
class DevHost:
    base: Path
    server: hostctl.Server
    tls: render.TlsFiles

    @property
    def conf(self) -> Path:
        return self.base / "conf"

    @property
    def directory(self) -> Path:
        return self.base / "docker" / "primary"

    @property
    def status(self) -> Path:
        return self.directory / "status" / "status.json"

    def bundle(self, pw: CloudPasswords, **postgres: object) -> str:
        cfg = config.load({"postgres": {"port": self.server.port,
                                        "database": "platform_apply", **postgres}}, "test")
        paths = render.HostPaths(data_dir=str(self.server.data_dir),
                                 socket_dir=str(self.base / "run"))
        bin_dir, log = str(hostctl.bin_dir()), str(self.base / "log" / "server.log")
        start = str(self.conf / "start.sh")
        files = {
            str(self.conf / "postgresql.conf"): render.postgresql_conf(
                cfg, paths, timescaledb=False, tls=self.tls),
            str(self.conf / "pg_hba.conf"): render.pg_hba_conf(
                cfg, ("127.0.0.1/32",), ident_map=False, tls=True),
            start: render.render("docker-start.sh.j2", role="primary", conf_dir=str(self.conf),
                                 standby=None, backup_dir="", bin_dir=bin_dir, log_file=log,
                                 marks="", config_path="", stanza=""),
        }
        reload = reload_postgres()
        return docker_bundle.container_bundle(
            "primary", files, private=frozenset(),
            then={p: reload for p in files if not p.endswith("start.sh")},
            services=docker_bundle.postgres_services(
                POSTGRES_UNIT, bin_dir=bin_dir, data_dir=str(self.server.data_dir),
                start_script=start, log_file=log),
            postgres={"unit": POSTGRES_UNIT, "socket_dir": str(self.base / "run"),
                      "port": self.server.port, "os_user": "postgres"},
            sql=bootstrap_script(bootstrap_spec(cfg, pw)), slots=["replica_1"],
            status_file=str(self.status))

    def deliver_and_watch(self, text: str) -> dict[str, object]:
        """What `up` does (the bundle directory), then one run of the container's loop."""
        delivery.write_bundle_dir(self.directory, text, delivery.agent_files())
        watch.watch(self.directory / "bundle", ["--state-file", str(self.base / "applied")],
                    sleep=lambda _s: None, runs=1)
        status: dict[str, object] = json.loads(self.status.read_text())
        return status

    def pid(self) -> int:
        return int((self.server.data_dir / "postmaster.pid").read_text().split()[0])

    def login(self, role: str, password: str) -> str:
        return tls_login(self.server, self.tls, role, password)


@pytest.fixture(scope="module")
def dev_host() -> Iterator[DevHost]:
    base = scratch_dir("pgp-apply-dev-")
    os.chmod(base, 0o755)
    server = hostctl.Server(data_dir=base / "pg" / "data", port=ports.free_port())
    for owned in (base / "run", base / "pg", base / "log"):
        hostctl.make_dir(owned, 0o700)
        hostctl.chown_service(owned)
    (base / "tls").mkdir()
    h = DevHost(base=base, server=server, tls=write_tls(base / "tls"))
    old_pgdata = os.environ.get("PGDATA")
    os.environ["PGDATA"] = str(server.data_dir)     # as the container's env sets it
    try:
        yield h
    finally:
        if old_pgdata is None:
            os.environ.pop("PGDATA", None)
        else:
            os.environ["PGDATA"] = old_pgdata
        watch.stop_services(h.directory / "bundle" / "bundle.json")
        shutil.rmtree(base, ignore_errors=True)


def test_dev_bundle_first_start_makes_the_cluster_roles_and_slot(dev_host: DevHost) -> None:
    text = dev_host.bundle(OLD)
    status = dev_host.deliver_and_watch(text)
    assert status["ok"] is True, status
    assert status["version"] == json.loads(text)["version"]
    # The directory the container mounts: the bundle its owner's alone.
    assert stat.S_IMODE(os.stat(dev_host.directory / "bundle").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dev_host.directory / "bundle" / "bundle.json").st_mode) == 0o600
    assert (dev_host.server.data_dir / "PG_VERSION").exists()     # start.sh's initdb
    assert dev_host.login("platform_owner", OLD.owner) == "platform_owner"
    out = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-h",
                          str(dev_host.base / "run"), "-p", str(dev_host.server.port), "-d",
                          "postgres", "-c", "SELECT slot_name FROM pg_replication_slots"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["replica_1"]


def test_dev_bundle_parameter_and_rotation_in_place(dev_host: DevHost) -> None:
    pid = dev_host.pid()
    status = dev_host.deliver_and_watch(dev_host.bundle(NEW, work_mem="16MB"))
    assert status["ok"] is True, status
    assert dev_host.pid() == pid                                   # pg_ctl reload only
    assert dev_host.login("app", NEW.app) == "app"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        dev_host.login("app", OLD.app)


def test_dev_bundle_restart_setting_restarts_through_pg_ctl(dev_host: DevHost) -> None:
    pid = dev_host.pid()
    status = dev_host.deliver_and_watch(dev_host.bundle(NEW, work_mem="16MB",
                                                        max_connections=130))
    assert status["ok"] is True, status
    assert dev_host.pid() != pid
    assert dev_host.login("platform_owner", NEW.owner) == "platform_owner"


def test_dev_bundle_failure_is_reported_and_stop_stops_the_server(dev_host: DevHost) -> None:
    text = json.loads(dev_host.bundle(NEW, work_mem="16MB", max_connections=130))
    text["services"][POSTGRES_UNIT]["reload"] = ["false"]
    text["files"][0]["content"] += "\n# changed\n"
    text["version"] = apply.bundle_version(text)
    status = dev_host.deliver_and_watch(json.dumps(text))
    assert status["ok"] is False and "false" in str(status["error"]), status
    watch.stop_services(dev_host.directory / "bundle" / "bundle.json")
    assert not dev_host.server.is_running()
