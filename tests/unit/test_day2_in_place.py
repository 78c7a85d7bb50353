"""Day-2 changes converge in place: no instance, container or data volume is replaced,
user-data stays the same, and the hosts' and containers' config bundles carry the change
(docs/day2.md).

The programs run under Pulumi's mocks for a base config and for each change the
review listed; for every instance and volume in both runs, the inputs the AWS
provider replaces them for must be equal. The replacing inputs come from the
provider's schema (ForceNew in the Terraform provider pulumi-aws bridges). On
dev nearly every input of a docker container forces a new one, so there every
input of every container and volume must be equal.
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


DEV_CONTAINER = "docker:index/container:Container"
DEV_VOLUME = "docker:index/volume:Volume"
DEV_BUNDLE = "pulumi-python:dynamic/docker:Bundle"
DEV_SCHEDULER = "pulumi-python:dynamic/local:BackupScheduler"
# Which containers' bundles each change must reach (at least). backup.schedule reaches
# none: it is the scheduler daemon's on the Docker host (test_dev_schedule_* below).
DEV_REACHES = {
    "pool size": {"pooler"},
    "replica added": {"primary", "pooler", "replica-1", "replica-2"},
    "replica removed": {"primary", "pooler", "replica-1"},
    "a PostgreSQL parameter": {"primary", "replica-1", "replica-2"},
    "a restart-only parameter": {"primary", "replica-1", "replica-2"},
    "backup retention": {"primary"},
    "password rotation": {"primary", "replica-1", "replica-2", "pooler"},
}


@pytest.fixture(scope="module")
def dev_base() -> cm.Run:
    return cm.run(DEV_BASE, "dev")


def _dev_bundles(run: cm.Run) -> dict[str, dict[str, Any]]:
    return {r.name.removesuffix("-bundle"): json.loads(cm.plain(r.inputs["bundle"]))
            for r in run.mocks.of_type(DEV_BUNDLE)}


def _inputs(run: cm.Run, typ: str) -> dict[str, Any]:
    return {r.name: cm.plain(r.inputs) for r in run.mocks.of_type(typ)}


@pytest.mark.parametrize("change", sorted(DEV_CHANGES))
def test_dev_replaces_no_container_and_no_volume(dev_base: cm.Run, change: str) -> None:
    """Every input of every container and volume that both runs have is the same."""
    after = cm.run(DEV_CHANGES[change], "dev")
    for typ in (DEV_CONTAINER, DEV_VOLUME):
        old, new = _inputs(dev_base, typ), _inputs(after, typ)
        for name in set(old) & set(new):
            for key in set(old[name]) | set(new[name]):
                assert old[name].get(key) == new[name].get(key), (change, typ, name, key)
    assert {"primary", "replica-1", "pooler"} <= set(_inputs(after, DEV_CONTAINER))
    assert {"primary-volume", "backup-volume", "replica-1-volume"} <= set(
        _inputs(after, DEV_VOLUME))


@pytest.mark.parametrize("change", sorted(DEV_REACHES))
def test_each_change_reaches_the_dev_bundles(dev_base: cm.Run, change: str) -> None:
    before, after = _dev_bundles(dev_base), _dev_bundles(cm.run(DEV_CHANGES[change], "dev"))
    changed = {c for c in set(before) & set(after)
               if before[c]["version"] != after[c]["version"]}
    assert DEV_REACHES[change] <= changed | (set(after) - set(before)), (change, changed)


def test_dev_replicas_change_the_slots_the_primary_keeps(dev_base: cm.Run) -> None:
    assert _dev_bundles(dev_base)["primary"]["slots"] == ["replica_1", "replica_2"]
    added = _dev_bundles(cm.run(DEV_CHANGES["replica added"], "dev"))
    assert added["primary"]["slots"] == ["replica_1", "replica_2", "replica_3"]
    assert "replica-3" in added
    removed = _dev_bundles(cm.run(DEV_CHANGES["replica removed"], "dev"))
    assert removed["primary"]["slots"] == ["replica_1"] and "replica-2" not in removed


def test_dev_rotation_reaches_roles_userlist_and_passfile(dev_base: cm.Run) -> None:
    old, new = _dev_bundles(dev_base), _dev_bundles(cm.run(DEV_CHANGES["password rotation"],
                                                             "dev"))
    assert old["primary"]["sql"] != new["primary"]["sql"]

    def content(b: dict[str, Any], path: str) -> str:
        return str(next(f["content"] for f in b["files"] if f["path"] == path))

    for name, path in (("pooler", "/etc/pg-platform/userlist.txt"),
                       ("replica-1", "/home/postgres/.pgpass")):
        assert content(old[name], path) != content(new[name], path), name


def test_an_image_change_does_replace_the_containers(dev_base: cm.Run) -> None:
    """The check above can fail: a new image is a new container input (deleted first)."""
    raw = copy.deepcopy(DEV_BASE)
    raw["docker"] = {"image": "timescale/timescaledb-ha:pg15@sha256:" + "ef" * 32}
    old, new = _inputs(dev_base, DEV_CONTAINER), _inputs(cm.run(raw, "dev"), DEV_CONTAINER)
    assert all(old[n]["image"] != new[n]["image"] for n in ("primary", "replica-1", "pooler"))


def _scheduler(run: cm.Run) -> dict[str, Any]:
    return dict(cm.plain(run.mocks.one(DEV_SCHEDULER, "backup-scheduler").inputs))


def test_dev_schedule_change_updates_only_the_scheduler(dev_base: cm.Run) -> None:
    """No container, volume or bundle input changes; the scheduler's schedule does."""
    after = cm.run(DEV_CHANGES["backup schedule"], "dev")
    for typ in (DEV_CONTAINER, DEV_VOLUME, DEV_BUNDLE):
        assert _inputs(dev_base, typ) == _inputs(after, typ), typ
    old, new = _scheduler(dev_base), _scheduler(after)
    assert {k for k in set(old) | set(new) if old.get(k) != new.get(k)} == {"schedule"}
    assert new["schedule"] == {"full": "30 3 * * 0", "diff": "0 1 * * 1-6",
                               "incr": "0 */4 * * *"}


def test_dev_scheduler_runs_pgbackrest_in_the_primary_container(dev_base: cm.Run) -> None:
    """The daemon's argv: the local scheduler with `docker exec -u postgres <primary>` and
    the in-container pgbackrest.conf; no password anywhere in its inputs."""
    from infra.backends.local_backup_scheduler import daemon

    props = _scheduler(cm.run(DEV_CHANGES["backup schedule"], "dev"))
    primary = cm.plain(dev_base.mocks.one(DEV_CONTAINER, "primary").inputs)["name"]
    argv = list(daemon(props).argv)
    assert argv[1:3] == ["-m", "infra.backup.scheduler"]
    prefix = next(a.removeprefix("--exec-prefix=") for a in argv
                  if a.startswith("--exec-prefix="))
    cli, *rest = prefix.split(" ")
    assert cli.endswith("docker") and rest == ["exec", "-u", "postgres", primary], prefix
    assert primary == "pgp-dev-primary"
    for arg in ("--config=/etc/pg-platform/pgbackrest.conf", "--stanza=main",
                "--full=30 3 * * 0", "--diff=0 1 * * 1-6", "--incr=0 */4 * * *"):
        assert arg in argv, (arg, argv)
    assert not any("password" in a.lower() or "passfile" in a for a in argv), argv
    text = json.dumps(props)
    for role in ("app", "platform_owner", "replicator"):
        assert dev_base.mocks.password(role) not in text, role
    assert "backup-scheduler" not in _inputs(dev_base, DEV_CONTAINER)
    # Health asks the same pgBackRest the same way (infra/health/stack.py).
    from infra import config
    from infra.backends import registry

    health = registry.get("docker").remote_pgbackrest(config.load(DEV_BASE, "dev"))
    assert health is not None
    assert health.argv("info") == [cli, *rest, "pgbackrest",
                                   "--config=/etc/pg-platform/pgbackrest.conf",
                                   "--stanza=main", "info"]
