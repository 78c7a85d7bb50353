"""Day-2 changes converge in place: no instance and no data volume is replaced, user-data
stays the same, and the hosts' config bundles carry the change (docs/day2.md).

The programs run under Pulumi's mocks for a base config and for each change the
review listed; for every instance and volume in both runs, the inputs the AWS
provider replaces them for must be equal. The replacing inputs come from the
provider's schema (ForceNew in the Terraform provider pulumi-aws bridges).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.unit import cloud_mocks as cm
from tests.unit.test_aws_backend import RAW, user_data_text

INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
ENI = "aws:ec2/networkInterface:NetworkInterface"
# Inputs that force a new resource (user data only while userDataReplaceOnChange is on).
REPLACING = {
    INSTANCE: ("ami", "availabilityZone", "subnetId", "networkInterfaces", "keyName",
               "placementGroup", "tenancy", "hostId", "userDataReplaceOnChange"),
    VOLUME: ("availabilityZone", "encrypted", "kmsKeyId", "snapshotId", "outpostArn"),
    ATTACHMENT: ("deviceName", "instanceId", "volumeId"),
    ENI: ("subnetId",),
}
ROOT_REPLACING = ("encrypted", "kmsKeyId")


def _with(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return raw


CHANGES = {
    "pool size": _with("pooler.default_pool_size", 35),
    "replica added": _with("replicas", 3),
    "replica removed": _with("replicas", 1),
    "a PostgreSQL parameter": _with("postgres.parameters", {"random_page_cost": "1.1"}),
    "a restart-only parameter": _with("postgres.max_connections", 300),
    "backup retention": _with("backup.retention_full", 9),
    "backup schedule": _with("backup.schedule", {"full": "30 3 * * 0"}),
    "password rotation": _with("rotation", 1),
    "an SSH key": _with("aws.ssh_public_keys", []),
}
# Which hosts' bundles each change must reach (at least).
REACHES = {
    "pool size": {"primary"}, "replica added": {"primary", "replica-1", "replica-2"},
    "replica removed": {"primary"}, "a PostgreSQL parameter": {"primary", "replica-1"},
    "a restart-only parameter": {"primary", "replica-1"}, "backup retention": {"primary"},
    "backup schedule": {"primary"}, "password rotation": {"primary", "replica-1"},
    "an SSH key": {"primary", "replica-1"},
}


@pytest.fixture(scope="module")
def base() -> cm.Run:
    return cm.run(RAW, "prod")


def _by_name(run: cm.Run, typ: str) -> dict[str, cm.Recorded]:
    return {r.name: r for r in run.mocks.of_type(typ)}


def _bundles(run: cm.Run) -> dict[str, dict[str, Any]]:
    return {r.name.removesuffix("-files-value"): json.loads(r.get("secretString"))
            for r in run.mocks.of_type("aws:secretsmanager/secretVersion:SecretVersion")
            if r.name.endswith("-files-value")}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_no_instance_or_volume_is_replaced(base: cm.Run, change: str) -> None:
    after = cm.run(CHANGES[change], "prod")
    for typ, keys in REPLACING.items():
        old, new = _by_name(base, typ), _by_name(after, typ)
        for name in set(old) & set(new):
            for key in keys:
                assert old[name].get(key) == new[name].get(key), (change, typ, name, key)
    old_i, new_i = _by_name(base, INSTANCE), _by_name(after, INSTANCE)
    for name in set(old_i) & set(new_i):
        assert user_data_text(old_i[name]) == user_data_text(new_i[name]), (change, name)
        for key in ROOT_REPLACING:
            assert (old_i[name].get("rootBlockDevice").get(key)
                    == new_i[name].get("rootBlockDevice").get(key))
    assert set(old_i) & set(new_i) >= {"primary", "replica-1"}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_change_reaches_the_bundles(base: cm.Run, change: str) -> None:
    before, after = _bundles(base), _bundles(cm.run(CHANGES[change], "prod"))
    changed = {h for h in set(before) & set(after)
               if before[h]["version"] != after[h]["version"]}
    assert REACHES[change] <= changed | (set(after) - set(before)), (change, changed)


def test_replicas_change_the_slots_the_primary_keeps(base: cm.Run) -> None:
    assert _bundles(base)["primary"]["slots"] == ["replica_1", "replica_2"]
    added = _bundles(cm.run(CHANGES["replica added"], "prod"))
    assert added["primary"]["slots"] == ["replica_1", "replica_2", "replica_3"]
    removed = _bundles(cm.run(CHANGES["replica removed"], "prod"))
    assert removed["primary"]["slots"] == ["replica_1"]     # pgp-apply drops replica_2's


def test_rotation_reaches_database_pooler_passfiles_and_secret_store(base: cm.Run) -> None:
    after = cm.run(CHANGES["password rotation"], "prod")
    old, new = _bundles(base), _bundles(after)
    assert old["primary"]["sql"] != new["primary"]["sql"]          # ALTER ROLE ... verifier

    def content(b: dict[str, Any], path: str) -> str:
        return str(next(f["content"] for f in b["files"] if f["path"] == path))

    assert content(old["primary"], "/etc/pgbouncer/userlist.txt") != content(
        new["primary"], "/etc/pgbouncer/userlist.txt")
    assert content(old["replica-1"], "/etc/pg-platform/secret/pgpass") != content(
        new["replica-1"], "/etc/pg-platform/secret/pgpass")
    for role in ("app", "platform_owner", "replicator"):
        before = cm.plain(base.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                         f"{role}-password-value").inputs["secretString"])
        now = cm.plain(after.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                       f"{role}-password-value").inputs["secretString"])
        assert json.loads(before)["password"] != json.loads(now)["password"]
        assert json.loads(now)["password"] == after.mocks.password(role)
    assert cm.plain(after.outputs["app_dsn"]) != cm.plain(base.outputs["app_dsn"])


def _dev(raw: dict[str, Any]) -> dict[str, Any]:
    """The same settings for the dev stack: no aws section, a posix repository."""
    out = {k: copy.deepcopy(v) for k, v in raw.items() if k != "aws"}
    out["backup"] = {k: v for k, v in out.get("backup", {}).items() if k != "s3"}
    return out


DEV_CHANGES = {name: _dev(raw) for name, raw in CHANGES.items() if name != "an SSH key"}
DEV_BASE = _dev(RAW)


@pytest.mark.parametrize("change", sorted(DEV_CHANGES))
def test_dev_keeps_its_volumes(change: str) -> None:
    """Dev converges by replacing containers (deleted first); its data volumes stay."""
    before, after = cm.run(DEV_BASE, "dev"), cm.run(DEV_CHANGES[change], "dev")
    old = {r.name: r for r in before.mocks.of_type("docker:index/volume:Volume")}
    new = {r.name: r for r in after.mocks.of_type("docker:index/volume:Volume")}
    for name in set(old) & set(new):
        for key in ("name", "driver", "driverOpts", "labels"):
            assert old[name].get(key) == new[name].get(key), (change, name, key)
    assert {"primary-volume", "backup-volume", "replica-1-volume"} <= set(old) & set(new)
