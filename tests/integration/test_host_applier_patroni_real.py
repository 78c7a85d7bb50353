"""pgp-apply with a `patroni` section, against a real etcd member and a real Patroni node.

The bundle is the one a prod host with `ha.manager: patroni` gets, made by the same
renderers (patroni_yml, etcd_conf) for one node on 127.0.0.2 (Patroni refuses
127.0.0.1 as an address others dial) with a one-member etcd. The applier runs for
real: the REST calls (GET /patroni, /config, PATCH /config), patronictl, psql and
pg_isready through `runuser`. Only `systemctl` is played by this test, mapping each
unit onto the same foreground processes the local stack supervises (etcd and
Patroni as the service user), so starts, reloads and restarts really happen.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from infra import config, hostctl, render
from infra.backends.aws_bundle import CloudPasswords, bootstrap_spec
from infra.backends.host_bundle import ETCD_UNIT, PATRONI_UNIT, POSTGRES_UNIT, BundleFile, make
from infra.hostagent import apply
from infra.hostctl.etcd import EtcdCluster, LocalMember
from infra.hostctl.patroni import PatroniProcess
from infra.render import patroni as render_ha
from infra.render.roles_sql import bootstrap_script
from tests import ports
from tests.support import scratch_dir, write_tls

HOST = "127.0.0.2"
PW = CloudPasswords(owner="own-1", app="app-1", replicator="rep-1", pooler_admin="adm-1",
                    monitor="mon-1", tenant_admin="ta-1")
SECRETS = render_ha.HaSecrets("break-glass-1", PW.replicator, "rest-1")


@dataclass
class Node:
    base: Path
    tls: render.TlsFiles
    port: int
    etcd: EtcdCluster
    patroni: PatroniProcess
    systemctl: list[str]

    def run(self, cmd: Sequence[str], stdin: str | None) -> str:
        """Real commands, except systemctl, which drives this node's etcd and Patroni."""
        if cmd[0] != "systemctl":
            return apply.run_command(cmd, stdin)
        self.systemctl.append(" ".join(cmd[1:]))
        verb, unit = cmd[1], cmd[-1]
        if verb in ("enable", "daemon-reload"):
            return ""
        if unit == POSTGRES_UNIT:
            raise AssertionError(f"pgp-apply touched {POSTGRES_UNIT} under Patroni: {cmd}")
        running = {ETCD_UNIT: lambda: self.etcd.members[0].daemon.is_running(),
                   PATRONI_UNIT: self.patroni.daemon.is_running}[unit]
        if verb == "is-active":
            if not running():
                raise apply.ApplyError("inactive")
        elif unit == ETCD_UNIT and verb in ("start", "restart"):
            if verb == "restart":
                self.etcd.stop()
            self.etcd.start()
        elif verb in ("start", "restart"):
            if verb == "restart":
                self.patroni.stop()
            self.patroni.start()
        elif verb == "reload":
            self.patroni.daemon.signal(signal.SIGHUP)
        return ""

    def bundle(self, **postgres: object) -> dict[str, object]:
        cfg = config.load({"postgres": {"port": self.port, "database": "platform_apply",
                                        **postgres},
                           "ha": {"manager": "patroni", "restapi_port": self.port + 1,
                                  "etcd_client_port": self.port + 2,
                                  "etcd_peer_port": self.port + 3}}, "test")
        member = render_ha.EtcdMember("etcd-1", HOST, self.port + 2, self.port + 3)
        node = render_ha.PatroniNode(
            name="pg-1", host=HOST, port=self.port, restapi_port=self.port + 1,
            paths=render.HostPaths(data_dir=str(self.patroni.data_dir),
                                   socket_dir=str(self.base / "run")),
            pgpass=str(self.base / "secret" / "patroni.pgpass"),
            config_dir=str(self.patroni.data_dir))
        patroni_yml = render_ha.patroni_yml(
            cfg, node, [member], SECRETS, timescaledb=False, tls=self.tls,
            hba_networks=("127.0.0.0/8",), ident_users=("postgres",),
            bin_dir=str(hostctl.bin_dir()))
        etcd_conf = render_ha.etcd_conf(cfg, member, [member],
                                        str(self.etcd.members[0].data_dir), self.tls)
        files = [
            BundleFile(str(self.etcd.members[0].config_file), etcd_conf, "postgres", "0600",
                       (f"restart:{ETCD_UNIT}",)),
            BundleFile(str(self.patroni.config_file), patroni_yml, "postgres", "0600",
                       (f"reload:{PATRONI_UNIT}",)),
        ]
        spec = {"unit": PATRONI_UNIT, "etcd_unit": ETCD_UNIT,
                "config": str(self.patroni.config_file), "ca_file": self.tls.ca_file,
                "members": [self.patroni.rest_url]}
        return make("primary", files, postgres={
            "unit": POSTGRES_UNIT, "socket_dir": str(self.base / "run"), "port": self.port,
            "os_user": "postgres"}, sql=bootstrap_script(bootstrap_spec(cfg, PW)),
            enable=[ETCD_UNIT, PATRONI_UNIT], patroni=spec)

    def converge(self, bundle: dict[str, object]) -> apply.Outcome:
        self.systemctl.clear()
        return apply.converge(bundle, apply.Host(run=self.run,
                                                 state_file=str(self.base / "applied.json")))

    def show(self, name: str) -> str:
        """`SHOW name` (or the login, for current_user) as the app role over verified TLS."""
        query = "SELECT current_user" if name == "current_user" else f"SHOW {name}"
        with psycopg.connect(host=HOST, port=self.port, user="app", password=PW.app,
                             dbname="platform_apply", sslmode="verify-full",
                             sslrootcert=self.tls.ca_file, connect_timeout=10) as c:
            row = c.execute(query).fetchone()
        return str(row[0]) if row else ""


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    base = scratch_dir("pgp-apply-patroni-")
    port = ports.free_run(4, hosts=(HOST,))
    for owned in (base / "run", base / "secret", base / "etcd", base / "patroni"):
        hostctl.make_dir(owned, 0o700)
        hostctl.chown_service(owned)
    tls_dir = base / "tls"
    tls_dir.mkdir()
    tls = write_tls(tls_dir)
    etcd = EtcdCluster((LocalMember(render_ha.EtcdMember("etcd-1", HOST, port + 2, port + 3),
                                    base / "etcd"),), tls)
    patroni = PatroniProcess("pg-1", HOST, port + 1, base / "patroni" / "pg-1.yml",
                             base / "pg-1", tls)
    n = Node(base=base, tls=tls, port=port, etcd=etcd, patroni=patroni, systemctl=[])
    try:
        yield n
    finally:
        patroni.remove()
        etcd.remove()
        shutil.rmtree(base, ignore_errors=True)


def test_first_converge_starts_etcd_then_patroni_and_runs_the_roles_sql(node: Node) -> None:
    out = node.converge(node.bundle())
    starts = [c for c in node.systemctl if c.startswith("start")]
    assert starts == [f"start --no-block {ETCD_UNIT}", f"start {PATRONI_UNIT}"], node.systemctl
    assert node.systemctl[-2:] == [f"enable --now {ETCD_UNIT}", f"enable --now {PATRONI_UNIT}"]
    assert out.role == "primary" and out.sql and out.slots == []
    # Patroni bootstrapped the node with the bundle's dynamic configuration: no PATCH.
    assert "PATCH /config" not in out.actions, out.actions
    assert node.show("current_user") == "app"


def test_an_unchanged_bundle_does_nothing(node: Node) -> None:
    out = node.converge(node.bundle())
    assert out.written == [] and out.actions == [] and not out.sql


def test_a_parameter_goes_through_patronis_dynamic_configuration(node: Node) -> None:
    pid = node.patroni.postmaster_pid()
    out = node.converge(node.bundle(work_mem="24MB"))
    assert out.written == [str(node.patroni.config_file)]
    assert out.actions == [f"reload {PATRONI_UNIT}", "PATCH /config"], out.actions
    assert node.show("work_mem") == "24MB"
    assert node.patroni.postmaster_pid() == pid   # a reload, not a restart


def test_a_restart_parameter_restarts_the_node_through_patroni(node: Node) -> None:
    pid = node.patroni.postmaster_pid()
    out = node.converge(node.bundle(work_mem="24MB", max_connections=150))
    assert out.actions == [f"reload {PATRONI_UNIT}", "PATCH /config",
                           "restart pg-1 (pending)"], out.actions
    assert node.show("max_connections") == "150"
    assert node.patroni.postmaster_pid() != pid
