"""Dev with `ha.manager: patroni` under Pulumi mocks: three etcd containers, three Patroni
containers (Patroni is each one's main process), HAProxy in front and PgBouncer dialling
it; images pinned by digest, fixed addresses, no secret in any env, command or upload.

tests/integration/test_ha_dev_prod_files.py runs `patroni --validate-config` and
`haproxy -c` on the files these tests read.
"""

from __future__ import annotations

import configparser
import json
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from infra import config
from infra.backends import docker_delivery as delivery
from infra.backends import docker_ha
from infra.config.docker import DEFAULT_ETCD_IMAGE, DEFAULT_HAPROXY_IMAGE
from infra.errors import ConfigError
from infra.hostagent import patroni_api, patroni_step
from tests.unit import cloud_mocks as cm
from tests.unit.test_ha_dev_prod import dev_raw

CONTAINER = "docker:index/container:Container"
BUNDLE = "pulumi-python:dynamic/docker:Bundle"
CONFIG_DIR = "pulumi-python:dynamic/docker:ConfigDir"
NODES = ("primary", "replica-1", "replica-2")
ETCD = ("etcd-1", "etcd-2", "etcd-3")


@pytest.fixture(scope="module")
def dev() -> cm.Run:
    return cm.run(dev_raw(), "dev")


def bundle_of(run: cm.Run, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cm.plain(run.mocks.one(BUNDLE, f"{name}-bundle")
                                                 .inputs["bundle"]))
    return loaded


def files_of(run: cm.Run, name: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in bundle_of(run, name)["files"]}


def network_of(c: cm.Recorded) -> dict[str, Any]:
    nets: list[dict[str, Any]] = c.get("networksAdvanced")
    assert len(nets) == 1
    return nets[0]


def test_the_graph_has_three_etcd_three_patroni_haproxy_and_the_pooler(dev: cm.Run) -> None:
    names = {c.name for c in dev.mocks.of_type(CONTAINER)}
    assert names == {*ETCD, *NODES, "haproxy", "pooler"}
    images = {r.name: r.get("name")
              for r in dev.mocks.of_type("docker:index/remoteImage:RemoteImage")}
    assert images["etcd-image"] == DEFAULT_ETCD_IMAGE
    assert images["haproxy-image"] == DEFAULT_HAPROXY_IMAGE
    assert "@sha256:" in DEFAULT_ETCD_IMAGE and "@sha256:" in DEFAULT_HAPROXY_IMAGE
    for i, name in enumerate(ETCD, start=1):
        c = dev.mocks.one(CONTAINER, name)
        assert c.get("image") == f"sha256:{DEFAULT_ETCD_IMAGE}"
        assert c.get("entrypoints") == ["/usr/local/bin/etcd"]
        assert c.get("command") == ["--config-file", "/etc/pg-platform/etcd.conf"]
        assert network_of(c)["ipv4Address"] == f"172.28.16.{10 + i}"
        assert not c.get("ports"), name          # etcd is reached on the network only
        mounts = {m["containerPath"]: m for m in c.get("volumes")}
        assert mounts["/var/lib/etcd"]["volumeName"] == f"pgp-dev-{name}"
        assert mounts["/etc/pg-platform"]["readOnly"] is True
        assert "etcdctl" in c.get("healthcheck")["tests"][1]
    for i, name in enumerate(NODES):
        c = dev.mocks.one(CONTAINER, name)
        # tini, the entry script (files, then the watcher), then `patroni <patroni.yml>`.
        assert c.get("init") is True and c.get("entrypoints") == ["bash"]
        cmd = c.get("command")
        assert cmd[0] == f"{delivery.BUNDLE_MOUNT}/{delivery.ENTRY_SCRIPT}"
        assert cmd[-2:] == ["patroni", "/etc/pg-platform/patroni.yml"]
        assert network_of(c)["ipv4Address"] == f"172.28.16.{20 + i}"
        assert network_of(c)["aliases"] == [name]
        # Whichever container leads archives WAL: every one has the backup volume.
        assert any(m.get("volumeName") == "pgp-dev-backup" for m in c.get("volumes")), name
        agent = dev.mocks.one(BUNDLE, f"{name}-bundle").get("agent")
        assert {"apply.py", "patroni_step.py", "patroni_api.py", "watch.py",
                delivery.ENTRY_SCRIPT} <= set(agent)
    net = dev.mocks.of_type("docker:index/network:Network")[0]
    assert net.get("ipamConfigs")[0]["ipRange"] == "172.28.16.128/25"
    proxy = dev.mocks.one(CONTAINER, "haproxy")
    assert proxy.get("image") == f"sha256:{DEFAULT_HAPROXY_IMAGE}"
    assert {(p["internal"], p["external"], p["ip"]) for p in proxy.get("ports")} == {
        (5000, 5000, "127.0.0.1"), (5001, 5001, "127.0.0.1")}
    assert network_of(proxy)["ipv4Address"] == "172.28.16.30"


def test_the_bundles_carry_patroni_not_a_start_script(dev: cm.Run) -> None:
    for name in NODES:
        bundle = bundle_of(dev, name)
        assert bundle["patroni"]["supervisor"] == "container"
        assert bundle["patroni"]["etcd_unit"] == ""
        assert not bundle.get("services") and not bundle.get("slots")   # slots: Patroni's
        assert bundle["sql"], name            # it runs wherever the node leads
        paths = set(files_of(dev, name))
        assert "/etc/pg-platform/start.sh" not in paths
        assert {"/etc/pg-platform/patroni.yml", "/etc/pg-platform/pgbackrest.conf"} <= paths
        by_path = {f["path"]: f for f in bundle["files"]}
        assert by_path["/etc/pg-platform/patroni.yml"]["then"] == [
            "reload:pg-platform-patroni.service"]
        doc = yaml.safe_load(files_of(dev, name)["/etc/pg-platform/patroni.yml"])
        assert doc["etcd3"]["hosts"] == ["172.28.16.11:2379", "172.28.16.12:2379",
                                         "172.28.16.13:2379"]


def test_no_secret_in_any_env_command_or_plain_upload(dev: cm.Run) -> None:
    secrets = [str(r.outputs["value"]) for r in dev.mocks.of_type(cm.PASSWORD)]
    secrets += [str(r.outputs["key"]) for r in dev.mocks.of_type(cm.HOST_CERT)]
    assert len(secrets) > 10
    for c in dev.mocks.of_type(CONTAINER):
        assert not cm.contains_secret(c.inputs), c.name
        text = json.dumps(c.inputs)
        assert all(s not in text for s in secrets), c.name
    # What carries a secret is a secret: each bundle, each etcd config directory.
    for name in (*NODES, "pooler"):
        assert cm.is_secret(dev.mocks.one(BUNDLE, f"{name}-bundle").inputs["bundle"])
    for name in ETCD:
        cdir = dev.mocks.one(CONFIG_DIR, f"{name}-config")
        assert cm.is_secret(cdir.inputs["files"])
        assert cm.plain(cdir.inputs["files"])["tls/server.key"] == f"key-{name}-tls"


def test_pgbouncer_and_every_dsn_go_through_haproxy(dev: cm.Run) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(files_of(dev, "pooler")["/etc/pg-platform/pgbouncer.ini"])
    entries = {k: dict(kv.split("=", 1) for kv in v.split()) for k, v in
               ini["databases"].items()}
    hosts = {(e["host"], e["port"]) for e in entries.values()}
    assert hosts == {("haproxy", "5000"), ("haproxy", "5001")}, entries
    # TLS runs end to end through HAProxy: every node's certificate names `haproxy`.
    for name in NODES:
        cert = dev.mocks.one(cm.HOST_CERT, f"{name}-tls")
        assert "haproxy" in cert.get("hosts"), name
    out = dev.outputs
    for key in ("primary_dsn", "app_dsn"):
        assert conninfo_to_dict(cm.plain(out[key]))["port"] == "5000", key
    assert [conninfo_to_dict(d)["port"] for d in cm.plain(out["replica_dsns"])] == ["5001"]
    text = next(u["content"] for u in dev.mocks.one(CONTAINER, "haproxy").get("uploads")
                if u["file"] == docker_ha.HAPROXY_CFG)
    assert "uri /primary" in text and "uri /replica" in text
    for i in range(3):
        assert f"server pg-{i + 1} 172.28.16.{20 + i}:5432 check port 8008" in text


def test_an_unpinned_etcd_or_haproxy_image_is_refused_naming_the_key() -> None:
    raw = dev_raw()
    for key, image in (("etcd_image", "quay.io/coreos/etcd:v3.5.16"),
                       ("haproxy_image", "haproxy:2.6")):
        with pytest.raises(ConfigError, match=rf"^pg-platform:docker\.{key}='{image}': not "
                                              r"pinned by digest; allowed is NAME"):
            config.load({**raw, "docker": {**raw["docker"], key: image}}, "dev")


def test_a_network_too_small_for_the_fixed_addresses_is_refused() -> None:
    raw = dev_raw()
    small = {**raw, "docker": {**raw["docker"], "network_subnet": "172.28.16.0/27"}}
    with pytest.raises(ConfigError, match=r"^pg-platform:docker\.network_subnet="
                                          r"'172.28.16.0/27': too small for ha.manager"):
        cm.run(small, "dev")


class FakeApi:
    """Patroni's REST API as patroni_step sees it, answering as a running leader."""

    PatroniApiError = patroni_api.PatroniApiError
    LEADER_ROLES = patroni_api.LEADER_ROLES
    differs = staticmethod(patroni_api.differs)

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.sent: list[tuple[str, str]] = []

    def load_config(self, _path: str) -> dict[str, Any]:
        return {"restapi": {"connect_address": "primary:8008"}, "scope": "s",
                "bootstrap": {"dcs": {"loop_wait": 5}}}

    def rest_url(self, doc: dict[str, Any]) -> str:
        return f"https://{doc['restapi']['connect_address']}"

    def get(self, _url: str, path: str, _ca: str) -> tuple[int, dict[str, Any] | None]:
        if not self.up:
            return 0, None
        return 200, ({"state": "running", "role": "master"} if path == "/patroni"
                     else {"loop_wait": 5})

    def send(self, url: str, path: str, _body: dict[str, Any], _config: str,
             _ca: str) -> tuple[int, str]:
        self.sent.append((url, path))
        return 202, "reload scheduled"


def fake(up: bool = True) -> Any:
    """A FakeApi where patroni_step wants a module."""
    return FakeApi(up)


SPEC = {"unit": "pg-platform-patroni.service", "etcd_unit": "", "config": "/c/patroni.yml",
        "ca_file": "/c/ca.crt", "members": [], "supervisor": "container"}


def test_in_a_container_the_applier_never_calls_systemctl() -> None:
    ran: list[list[str]] = []

    def run(cmd: Any, _stdin: str | None) -> str:
        ran.append(list(cmd))
        return ""

    api = fake()
    res = patroni_step.converge(api, SPEC, run, ["reload:pg-platform-patroni.service"],
                                lambda _s: None)
    assert res.leader and ran == []
    assert api.sent == [("https://primary:8008", "/reload")]
    assert res.actions == ["reload pg-platform-patroni.service"]
    # Not answering yet: nothing is started from here (the entry script starts it) and the
    # step waits for it; and a restart is refused, not silently done as something else.
    with pytest.raises(patroni_api.PatroniApiError, match="not running"):
        patroni_step.converge(fake(up=False), SPEC, run, [], lambda _s: None)
    assert ran == []
    with pytest.raises(patroni_api.PatroniApiError, match="container's main process"):
        patroni_step.converge(api, SPEC, run, ["restart:pg-platform-patroni.service"],
                              lambda _s: None)


def test_on_prod_the_same_step_drives_systemd() -> None:
    ran: list[list[str]] = []

    def run(cmd: Any, _stdin: str | None) -> str:
        ran.append(list(cmd))
        if cmd[:2] == ["systemctl", "is-active"]:
            raise RuntimeError("inactive")
        return ""

    spec = {**SPEC, "etcd_unit": "pg-platform-etcd.service"}
    del spec["supervisor"]
    patroni_step.converge(fake(), spec, run, [], lambda _s: None)
    assert ["systemctl", "start", "--no-block", "pg-platform-etcd.service"] in ran
    assert ["systemctl", "start", "pg-platform-patroni.service"] in ran


class LeaderApi(FakeApi):
    """/primary answers 200 only while `leads`."""

    def __init__(self, leads: bool) -> None:
        super().__init__()
        self.leads = leads

    def get(self, _url: str, path: str, _ca: str) -> tuple[int, dict[str, Any] | None]:
        return (200 if self.leads else 503), {}


def test_the_first_backup_runs_once_and_only_where_patroni_leads(tmp_path: Any) -> None:
    from infra.hostagent import first_backup

    ha = {"config": "/c/patroni.yml", "ca_file": "/c/ca.crt",
          "first_backup": {"config": "/etc/pg-platform/pgbackrest.conf", "stanza": "main",
                           "marks": str(tmp_path / "marks"), "os_user": "postgres"}}
    ran: list[list[str]] = []
    results = [1, 0, 0]          # the first stanza-create fails, then all succeed

    def run(cmd: Any) -> int:
        ran.append(list(cmd))
        return results.pop(0) if results else 0

    replica = LeaderApi(leads=False)
    assert first_backup.once(ha, replica, run) is False and ran == []   # never on a replica
    leader = LeaderApi(leads=True)
    assert first_backup.once(ha, leader, run) is False                  # failed: retried
    assert first_backup.once(ha, leader, run) is True
    assert [c[-1] for c in ran] == ["stanza-create", "stanza-create", "backup"]
    assert ran[-1][:5] == ["runuser", "-u", "postgres", "--", "pgbackrest"]
    assert "--type=full" in ran[-1] and "--stanza=main" in ran[-1]
    # Marked on the shared backup volume: another node that leads later does nothing.
    assert first_backup.once(ha, leader, run) is True and len(ran) == 3


def test_every_patroni_bundle_asks_for_the_first_backup(dev: cm.Run) -> None:
    for name in NODES:
        spec = bundle_of(dev, name)["patroni"]["first_backup"]
        assert spec == {"config": "/etc/pg-platform/pgbackrest.conf", "stanza": "main",
                        "marks": "/home/postgres/pgdata/backup/.pg-platform",
                        "os_user": "postgres"}
        assert "first_backup.py" in dev.mocks.one(BUNDLE, f"{name}-bundle").get("agent")


def test_the_ha_graph_passes_the_guardrail_policies(dev: cm.Run) -> None:
    """policy/: every published port on loopback, etcd and HAProxy containers included."""
    from policy import validators
    from tests.unit.test_docker_backend import _violations

    published = {c.name: [p["ip"] for p in c.get("ports") or []]
                 for c in dev.mocks.of_type(CONTAINER)}
    assert all(ip == "127.0.0.1" for ips in published.values() for ip in ips), published
    for r in dev.mocks.resources:
        for rule in validators.RULES:
            if not rule.stack:
                assert _violations(rule.validate, r) == [], (rule.name, r.name)
