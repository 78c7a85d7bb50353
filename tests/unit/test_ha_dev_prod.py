"""dev and prod with `ha.manager: patroni`, under Pulumi mocks: every database host gets a
patroni.yml (a secret) and the first three an etcd config, rendered by the same functions
as the local stack's (infra/render/ha_hosts.py over infra/render/patroni.py), so the three
stacks agree on every PostgreSQL parameter, Patroni's timing and modes, the roles, pg_hba's
rules and etcd's settings; only addresses and paths are each host's.

tests/integration/test_ha_dev_prod_files.py runs `patroni --validate-config` on these files.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
import yaml

from infra import config, roles
from infra.backends.aws_ha import ha_layout
from infra.errors import ConfigError
from infra.render import ha_hosts
from tests.unit import cloud_mocks as cm
from tests.unit.test_aws_backend import RAW as PROD_RAW
from tests.unit.test_docker_backend import RAW as DEV_RAW

HA: dict[str, Any] = {"manager": "patroni", "synchronous": "on"}
POSTGRES: dict[str, Any] = {"port": 5432, "shared_buffers": "256MB"}
CONF = "/etc/pg-platform"
NODES = ("primary", "replica-1", "replica-2")
DYN = "pulumi-python:dynamic/local:"


def dev_raw() -> dict[str, Any]:
    return {**DEV_RAW, "postgres": POSTGRES, "ha": HA}


# bookworm's own versions (the host tier's rootfs and this machine have them).
HA_PINS = {"patroni": "3.0.2-1", "etcd-server": "3.4.23-4+b4", "haproxy": "2.6.12-1+deb12u4"}


def prod_raw() -> dict[str, Any]:
    aws = {**PROD_RAW["aws"], "package_versions": {**PROD_RAW["aws"]["package_versions"],
                                                   **HA_PINS}}
    return {**PROD_RAW, "postgres": POSTGRES, "ha": HA, "aws": aws}


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, dict[str, Any]]]:
    """stack -> node -> {"patroni": doc, "etcd": doc or None, "secret": bool, ...}."""
    return {"dev": dev_files(cm.run(dev_raw(), "dev")),
            "prod": prod_files(cm.run(prod_raw(), "prod")),
            "local": local_files(cm.run({"replicas": 2, "postgres": POSTGRES, "ha": HA},
                                        "local"))}


def dev_files(run: cm.Run) -> dict[str, dict[str, Any]]:
    """Dev's etcd runs in three containers of its own: database container i's `etcd_text`
    is etcd-(i+1)'s config, read from that container's config directory."""
    out = {}
    for i, name in enumerate(NODES):
        bundle = run.mocks.one("pulumi-python:dynamic/docker:Bundle", f"{name}-bundle")
        by_path = {f["path"]: f for f in json.loads(cm.plain(bundle.inputs["bundle"]))["files"]}
        assert f"{CONF}/etcd.conf" not in by_path, name
        etcd = run.mocks.one("pulumi-python:dynamic/docker:ConfigDir", f"etcd-{i + 1}-config")
        # The container's bundle is one secret, as a prod host's is.
        out[name] = {"patroni_text": by_path[f"{CONF}/patroni.yml"]["content"],
                     "mode": by_path[f"{CONF}/patroni.yml"]["mode"],
                     "owner": by_path[f"{CONF}/patroni.yml"]["owner"],
                     "etcd_text": cm.plain(etcd.inputs["files"])["etcd.conf"],
                     "secret": cm.is_secret(bundle.inputs["bundle"])}
    return out


def user_data(instance: cm.Recorded) -> str:
    text = instance.get("userData")
    if text:
        return str(text)
    return gzip.decompress(base64.b64decode(instance.get("userDataBase64"))).decode()


def prod_files(run: cm.Run) -> dict[str, dict[str, Any]]:
    out = {}
    for name in NODES:
        version = run.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                f"{name}-files-value")
        bundle = {f["path"]: f for f in json.loads(version.get("secretString"))["files"]}
        text = user_data(run.mocks.one("aws:ec2/instance:Instance", name))
        etcd = bundle.get(f"{CONF}/etcd.conf")
        out[name] = {"patroni_text": bundle[f"{CONF}/patroni.yml"]["content"],
                     "mode": bundle[f"{CONF}/patroni.yml"]["mode"],
                     "owner": bundle[f"{CONF}/patroni.yml"]["owner"],
                     "etcd_text": etcd["content"] if etcd else None,
                     "secret": cm.is_secret(version.inputs["secretString"]),
                     "user_data": text}
    return out


def local_files(run: cm.Run) -> dict[str, dict[str, Any]]:
    members = run.mocks.of_type(DYN + "PatroniMember")
    etcd = run.mocks.one(DYN + "EtcdCluster", "etcd").get("members")
    return {name: {"patroni_text": m.get("patroni_yml"), "etcd_text": e["config"],
                   "secret": cm.contains_secret(m.inputs["patroni_yml"])}
            for name, m, e in zip(NODES, sorted(members, key=lambda r: r.name), etcd,
                                  strict=True)}


def patroni(f: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(f["patroni_text"])
    return doc


def test_every_host_gets_a_secret_patroni_yml_and_three_an_etcd_member(
        files: dict[str, dict[str, dict[str, Any]]]) -> None:
    for stack in ("dev", "prod"):
        for i, name in enumerate(NODES):
            f = files[stack][name]
            assert f["secret"], (stack, name)
            assert patroni(f)["name"] == f"pg-{i + 1}"
            assert f["etcd_text"] is not None, (stack, name)
    prod = files["prod"]["primary"]
    assert (prod["mode"], prod["owner"]) == ("0600", "postgres")
    assert (files["dev"]["primary"]["mode"], files["dev"]["primary"]["owner"]) == (
        "0600", "postgres")
    # No password in user-data: patroni.yml goes in the host's own bundle only, and so
    # does etcd.conf (it lists the members; user-data must not change with `replicas`).
    pw = patroni(prod)["postgresql"]["authentication"]["superuser"]["password"]
    for n in NODES:
        ud = files["prod"][n]["user_data"]
        written = {f["path"] for f in yaml.safe_load(ud)["write_files"]}
        assert pw not in ud, n
        assert not {f"{CONF}/patroni.yml", f"{CONF}/etcd.conf"} & written, n


def test_dev_and_prod_render_the_same_dynamic_configuration(
        files: dict[str, dict[str, dict[str, Any]]]) -> None:
    dev = patroni(files["dev"]["primary"])["bootstrap"]["dcs"]
    prod = patroni(files["prod"]["primary"])["bootstrap"]["dcs"]
    # Both bundles write the key 0600 in place, at the same path: the same configuration.
    assert dev["postgresql"]["parameters"]["ssl_key_file"] == f"{CONF}/tls/server.key"
    assert dev == prod
    assert dev["ttl"] == 20 and dev["synchronous_mode"] is True
    assert dev["postgresql"]["use_pg_rewind"] is True and dev["postgresql"]["use_slots"] is True
    assert "timescaledb" in dev["postgresql"]["parameters"]["shared_preload_libraries"]
    # The local stack's differs only where a setting names a file of the host.
    local = patroni(files["local"]["primary"])["bootstrap"]["dcs"]
    assert local.keys() == dev.keys()
    lp, dp = local["postgresql"]["parameters"], dev["postgresql"]["parameters"]
    assert lp.keys() == dp.keys()
    differ = {k for k in lp if lp[k] != dp[k]}
    assert all(str(lp[k]).startswith("/") and str(dp[k]).startswith("/") for k in differ), \
        {k: (lp[k], dp[k]) for k in differ}


def test_same_roles_auth_and_hba_rules_on_every_stack(
        files: dict[str, dict[str, dict[str, Any]]]) -> None:
    cfg = config.load(dev_raw(), "dev")
    for stack in ("dev", "prod", "local"):
        for name in NODES:
            pg = patroni(files[stack][name])["postgresql"]
            auth = pg["authentication"]
            assert {k: v["username"] for k, v in auth.items()} == {
                "superuser": roles.BREAK_GLASS, "rewind": roles.BREAK_GLASS,
                "replication": cfg.postgres.replication_role}, (stack, name)
            assert all(v["sslmode"] == "verify-full" for v in auth.values())
            hba = pg["pg_hba"]
            assert hba[0] == f"local all {roles.BREAK_GLASS} peer map=breakglass"
            # dev and prod listen on every address: Patroni's own replication-protocol
            # checks go over the socket there, with the password (infra/render/patroni.py).
            wildcard = stack != "local"
            assert pg["use_unix_socket_repl"] is wildcard, (stack, name)
            socket_repl = f"local replication {cfg.postgres.replication_role} scram-sha-256"
            assert (socket_repl in hba) is wildcard, (stack, hba)
            assert all(line.startswith("hostssl ") and line.endswith(" scram-sha-256")
                       for line in hba[1:] if line != socket_repl), (stack, hba)
            assert pg["pg_ident"], (stack, name)


def _etcd_shape(text: str) -> dict[str, Any]:
    """etcd's settings with what is per host (names, addresses, paths) taken out."""
    doc: dict[str, Any] = yaml.safe_load(text)
    for key in ("name", "data-dir", "listen-client-urls", "advertise-client-urls",
                "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster",
                "initial-cluster-token"):
        doc.pop(key)
    for sec in ("client-transport-security", "peer-transport-security"):
        doc[sec] = {k: v for k, v in doc[sec].items() if not k.endswith("-file")}
    return doc


def test_etcd_settings_are_the_same_on_every_stack(
        files: dict[str, dict[str, dict[str, Any]]]) -> None:
    shapes = [_etcd_shape(files[s][n]["etcd_text"]) for s in ("dev", "prod", "local")
              for n in NODES]
    assert all(s == shapes[0] for s in shapes)
    assert shapes[0]["enable-v2"] is False and shapes[0]["enable-grpc-gateway"] is True
    prod = yaml.safe_load(files["prod"]["replica-1"]["etcd_text"])
    assert prod["initial-cluster"].count("https://10.0.1.") == 3
    assert prod["listen-client-urls"] == "https://0.0.0.0:2379"
    assert prod["advertise-client-urls"].startswith("https://10.0.1.")


def test_prod_members_reach_each_others_etcd_and_rest_ports() -> None:
    run = cm.run(prod_raw(), "prod")
    rules = {r.name for r in run.mocks.of_type(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")}
    assert {"etcd-client-from-members", "etcd-peer-from-members",
            "patroni-rest-from-members"} <= rules


def test_fewer_than_three_hosts_are_refused_naming_the_key() -> None:
    cfg = config.load({**prod_raw(), "replicas": 1}, "prod")
    with pytest.raises(ConfigError, match=r"pg-platform:replicas=1: pg-platform:ha.manager="
                                          r"'patroni' on the aws backend runs etcd on 3"):
        ha_hosts.etcd_members(cfg, ("10.0.1.1", "10.0.1.2"), ha_layout(cfg))


def test_a_replica_added_with_ha_changes_bundles_not_user_data() -> None:
    """etcd.conf and patroni.yml name hosts' addresses, so they travel in the bundles, and
    a replica more changes no instance's user-data (docs/day2.md). Patroni finds members
    through etcd, so the existing hosts' files stay as they were: nothing restarts."""
    before, after = cm.run(prod_raw(), "prod"), cm.run({**prod_raw(), "replicas": 3}, "prod")
    for name in NODES:
        old = user_data(before.mocks.one("aws:ec2/instance:Instance", name))
        assert old == user_data(after.mocks.one("aws:ec2/instance:Instance", name)), name
    new = prod_files(after)
    old_files = prod_files(before)
    for name in NODES:
        assert new[name]["patroni_text"] == old_files[name]["patroni_text"], name
        assert new[name]["etcd_text"] == old_files[name]["etcd_text"], name
    # The new member is a Patroni node; etcd stays on the first three hosts.
    version = after.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                              "replica-3-files-value")
    paths = {f["path"] for f in json.loads(version.get("secretString"))["files"]}
    assert f"{CONF}/patroni.yml" in paths and f"{CONF}/etcd.conf" not in paths


def test_without_ha_no_stack_has_a_superuser_password() -> None:
    """day2's rule stands where Patroni does not run: no break-glass password exists, so
    none reaches a bundle, an upload or a volume; with Patroni, only patroni.yml has it."""
    for raw, stack in ((PROD_RAW, "prod"), (DEV_RAW, "dev")):
        run = cm.run(raw, stack)
        names = {r.name for r in run.mocks.of_type(cm.PASSWORD)}
        assert not any(n.startswith(f"{roles.BREAK_GLASS}-password") for n in names), names
    with_ha = cm.run(prod_raw(), "prod")
    pw = patroni(prod_files(with_ha)["primary"])["postgresql"]["authentication"]
    secret = pw["superuser"]["password"]
    for name in NODES:
        version = with_ha.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                    f"{name}-files-value")
        holders = [f["path"] for f in json.loads(version.get("secretString"))["files"]
                   if secret in f["content"]]
        assert holders == [f"{CONF}/patroni.yml"], (name, holders)


def test_fewer_than_three_hosts_are_refused_before_any_resource() -> None:
    for raw, stack in ((prod_raw(), "prod"), (dev_raw(), "dev")):
        with pytest.raises(ConfigError, match=r"pg-platform:replicas=1: pg-platform:ha"):
            cm.run({**raw, "replicas": 1}, stack)
