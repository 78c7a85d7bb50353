"""The prod (AWS) program under Pulumi mocks: resources, security, user-data, secrets."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections import Counter
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from infra import config, render, scram
from infra.backends import aws_userdata as ud
from policy import validators
from tests.infra.inventory import exported_inventory
from tests.unit import cloud_mocks as cm

INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
RAW: dict[str, Any] = {
    "replicas": 2,
    "postgres": {"port": 5432},
    "aws": {"region": "eu-west-1", "vpc_id": "vpc-0123456789abcdef0",
            "vpc_cidr": "10.0.0.0/16",
            "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "allowed_cidrs": ["10.20.0.0/16"],
            "allowed_security_groups": ["sg-0123456789abcdef0"],
            "ami": "ami-0123456789abcdef0"},
    "backup": {"s3": {"bucket": "acme-pg-backups", "path": "/pgbackrest/prod"}},
}


@pytest.fixture(scope="module")
def prod() -> cm.Run:
    return cm.run(RAW, "prod")


@pytest.fixture(scope="module")
def cfg() -> config.PlatformConfig:
    return config.load(RAW, "prod")


def user_data(instance: cm.Recorded) -> str:
    """The #cloud-config text, plain or (over EC2's 16 KiB) gzip + base64."""
    packed = instance.get("userDataBase64")
    text: str = (gzip.decompress(base64.b64decode(packed)).decode() if packed
                 else instance.get("userData"))
    return text


def cloud_config(instance: cm.Recorded) -> dict[str, Any]:
    text = user_data(instance)
    assert text and text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def written(instance: cm.Recorded) -> dict[str, str]:
    return {f["path"]: f["content"] for f in cloud_config(instance)["write_files"]}


def test_resource_types_and_counts(prod: cm.Run) -> None:
    c = Counter(r.typ for r in prod.mocks.resources)
    hosts = 1 + 2
    assert c[INSTANCE] == hosts
    assert c["aws:ebs/volume:Volume"] == hosts
    assert c["aws:ec2/volumeAttachment:VolumeAttachment"] == hosts
    assert c["aws:ec2/networkInterface:NetworkInterface"] == hosts
    assert c["aws:ec2/securityGroup:SecurityGroup"] == 1
    # 2 ports x (1 CIDR + 1 SG) + replication between members.
    assert c[INGRESS] == 5
    assert c["aws:s3/bucketV2:BucketV2"] == 1
    for companion in ("bucketPublicAccessBlock:BucketPublicAccessBlock",
                      "bucketVersioningV2:BucketVersioningV2",
                      "bucketServerSideEncryptionConfigurationV2:"
                      "BucketServerSideEncryptionConfigurationV2",
                      "bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2",
                      "bucketPolicy:BucketPolicy"):
        assert c[f"aws:s3/{companion}"] == 1, companion
    assert c["aws:iam/role:Role"] == 1 and c["aws:iam/instanceProfile:InstanceProfile"] == 1
    # 4 role passwords + 1 bundle per host.
    assert c["aws:secretsmanager/secret:Secret"] == 4 + hosts
    assert c["aws:secretsmanager/secretVersion:SecretVersion"] == 4 + hosts


def _violations(validate: Any, r: cm.Recorded) -> list[str]:
    found: list[str] = []
    validate(_args(r), lambda message, *_: found.append(message))
    return found


def _args(r: cm.Recorded) -> Any:
    class A:
        resource_type = r.typ
        props = cm.plain(r.inputs)
    return A()


def test_every_guardrail_passes(prod: cm.Run) -> None:
    for r in prod.mocks.resources:
        for rule in validators.RULES:
            if not rule.stack:
                found = _violations(rule.validate, r)
                assert found == [], (rule.name, r.name, found)


def test_instances_imdsv2_encrypted_and_on_their_interfaces(prod: cm.Run) -> None:
    for inst in prod.mocks.of_type(INSTANCE):
        assert inst.get("metadataOptions")["httpTokens"] == "required"
        root = inst.get("rootBlockDevice")
        assert root["encrypted"] is True and root["volumeType"] == "gp3"
        assert inst.get("networkInterfaces")[0]["deviceIndex"] == 0
        assert inst.get("iamInstanceProfile")
        assert inst.get("ami") == RAW["aws"]["ami"]
    for vol in prod.mocks.of_type("aws:ebs/volume:Volume"):
        assert vol.get("encrypted") is True and vol.get("type") == "gp3"
        assert vol.get("availabilityZone") == cm.AZ


def test_ingress_only_from_configured_sources(prod: cm.Run) -> None:
    rules = prod.mocks.of_type(INGRESS)
    sources = {(r.get("fromPort"), r.get("cidrIpv4") or r.get("referencedSecurityGroupId"))
               for r in rules}
    assert sources == {(5432, "10.20.0.0/16"), (6432, "10.20.0.0/16"),
                       (5432, "sg-0123456789abcdef0"), (6432, "sg-0123456789abcdef0"),
                       (5432, "db-sg-id")}


def test_instance_role_is_limited_to_the_repo_path_and_host_secrets(prod: cm.Run) -> None:
    policy = json.loads(prod.mocks.one("aws:iam/rolePolicy:RolePolicy",
                                       "instance-policy").get("policy"))
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    bucket_arn = "arn:aws:mock:::backup-bucket"
    assert by_sid["RepoObjects"]["Resource"] == f"{bucket_arn}/pgbackrest/prod/*"
    assert by_sid["ListRepo"]["Condition"] == {
        "StringLike": {"s3:prefix": ["pgbackrest/prod/*"]}}
    assert "s3:*" not in json.dumps(policy)
    bundles = sorted(f"arn:aws:mock:::{n}-files" for n in ("primary", "replica-1", "replica-2"))
    assert by_sid["HostSecrets"]["Resource"] == bundles
    bucket = prod.mocks.one("aws:s3/bucketV2:BucketV2", "backup-bucket")
    assert bucket.get("bucket") == "acme-pg-backups" and not bucket.get("forceDestroy")


def test_user_data_files_equal_the_shared_renderings(prod: cm.Run,
                                                     cfg: config.PlatformConfig) -> None:
    primary = prod.mocks.one(INSTANCE, "primary")
    # Registration order is not fixed (resources register concurrently): order by host.
    enis = {r.name: r.outputs["privateIp"] for r in
            prod.mocks.of_type("aws:ec2/networkInterface:NetworkInterface")}
    ips = [enis[n] for n in sorted(enis, key=lambda n: (n != "primary-eni", n))]
    files = written(primary)
    paths = render.HostPaths(data_dir="/var/lib/postgresql/15/main",
                             socket_dir="/var/run/postgresql",
                             pgbackrest_config="/etc/pg-platform/pgbackrest.conf")
    assert files["/etc/pg-platform/postgresql.conf"] == render.postgresql_conf(
        cfg, paths, timescaledb=True, listen="0.0.0.0")
    assert files["/etc/pg-platform/pg_hba.conf"] == render.pg_hba_conf(
        cfg, ("10.0.0.0/16", "10.20.0.0/16"), ident_map=False, tls=False)  # no TLS yet (#17)
    assert files["/etc/pg-platform/pgbackrest.conf"] == render.pgbackrest_conf(
        cfg, paths, ud.backup_paths())
    assert "repo1-s3-key-type=auto" in files["/etc/pg-platform/pgbackrest.conf"]
    assert files["/etc/pg-platform/pgbouncer.ini"] == render.pgbouncer_ini(
        cfg, render.PoolerPaths(auth_file="/etc/pgbouncer/userlist.txt",
                                socket_dir="/var/run/postgresql"),
        render.PoolerTargets(listen_address="0.0.0.0", primary_host="127.0.0.1",
                             primary_port=5432, replica_hosts=tuple(ips[1:]),
                             replica_port=5432))
    # Scheduled backups: a systemd timer and service per type, no cron file.
    assert {p for p in files if p.startswith("/etc/systemd/system/pg-platform-backup-")} == {
        f"/etc/systemd/system/pg-platform-backup-{k}.{u}"
        for k in ("full", "diff", "incr") for u in ("service", "timer")}
    assert "OnCalendar=Sun *-*-* 01:00:00 UTC\n" in files[
        "/etc/systemd/system/pg-platform-backup-full.timer"]
    assert not any("cron" in p for p in files)


def test_replicas_point_at_the_primary(prod: cm.Run, cfg: config.PlatformConfig) -> None:
    primary_ip = prod.mocks.one("aws:ec2/networkInterface:NetworkInterface",
                                "primary-eni").outputs["privateIp"]
    for i in (1, 2):
        files = written(prod.mocks.one(INSTANCE, f"replica-{i}"))
        conf = files["/etc/pg-platform/postgresql.conf"]
        assert f"primary_conninfo = 'host={primary_ip} port=5432 user=replicator" in conf
        assert f"primary_slot_name = 'replica_{i}'" in conf
        env = files["/etc/pg-platform/host.env"]
        assert f"PRIMARY_HOST={primary_ip}\n" in env and f"SLOT=replica_{i}\n" in env
        assert "pg_basebackup" in files["/usr/local/sbin/pgp-setup"]
        assert "/etc/pg-platform/pgbouncer.ini" not in files


def test_data_volume_found_by_nvme_name(prod: cm.Run) -> None:
    primary = prod.mocks.one(INSTANCE, "primary")
    volume_id = next(r for r in prod.mocks.resources if r.name == "primary-data")
    files = written(primary)
    env = files["/etc/pg-platform/host.env"]
    vid = next(line.split("=", 1)[1] for line in env.splitlines()
           if line.startswith("VOLUME_ID="))
    assert vid.startswith("vol-") and volume_id.typ == "aws:ebs/volume:Volume"
    assert "nvme-Amazon_Elastic_Block_Store_" in files["/usr/local/sbin/pgp-setup"]


def test_no_secret_in_user_data_and_bundles_are_secret(prod: cm.Run,
                                                       cfg: config.PlatformConfig) -> None:
    passwords = [prod.mocks.password(r) for r in
                 ("platform_owner", "app", "replicator", "pgbouncer_admin")]
    verifiers = [scram.verifier(r, p) for r, p in
                 zip(("platform_owner", "app", "replicator", "pgbouncer_admin"), passwords,
                     strict=True)]
    for inst in prod.mocks.of_type(INSTANCE):
        assert not cm.contains_secret(inst.inputs), inst.name
        text = user_data(inst)
        for secret in passwords + verifiers:
            assert secret not in text
    for version in prod.mocks.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        assert cm.is_secret(version.inputs["secretString"]), version.name
    bundle = json.loads(prod.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                       "primary-files-value").get("secretString"))
    contents = {f["path"]: f for f in bundle["files"]}
    assert contents["/etc/pgbouncer/userlist.txt"]["content"] == render.userlist_txt(
        render.pooler_users(cfg, passwords[1], passwords[3]))
    assert all(f["mode"] == "0600" for f in bundle["files"])
    replica = json.loads(prod.mocks.one("aws:secretsmanager/secretVersion:SecretVersion",
                                        "replica-1-files-value").get("secretString"))
    assert passwords[0] not in json.dumps(replica)      # replicas never get the owner's


def test_outputs_match_the_local_stack_names(prod: cm.Run) -> None:
    out = prod.outputs
    assert all(out["secret"].values())
    assert len(out["replica_dsns"]) == 2
    pooler = conninfo_to_dict(out["pooler_dsn"])
    assert (pooler["port"], pooler["dbname"], pooler["user"]) == ("6432", "platform", "app")
    admin = conninfo_to_dict(out["pooler_admin_dsn"])
    assert (admin["port"], admin["dbname"], admin["user"]) == ("6432", "pgbouncer",
                                                               "pgbouncer_admin")
    assert out["ca_cert"] == ""  # no TLS on prod hosts yet (issue #17)


def test_world_cidr_is_refused_before_any_resource() -> None:
    raw = {**RAW, "aws": {**RAW["aws"], "allowed_cidrs": ["0.0.0.0/0"]}}
    with pytest.raises(Exception, match="whole internet"):
        config.load(raw, "prod")


def test_an_unnamed_bucket_is_named_by_pulumi_and_reaches_pgbackrest_conf() -> None:
    raw = {**RAW, "backup": {"s3": {"path": "/pgbackrest/prod"}}}
    run = cm.run(raw, "prod")
    bucket = run.mocks.one("aws:s3/bucketV2:BucketV2", "backup-bucket")
    assert bucket.get("bucketPrefix") == "pg-platform-prod-backups-"
    made = bucket.outputs["bucket"]
    conf = written(run.mocks.one(INSTANCE, "primary"))["/etc/pg-platform/pgbackrest.conf"]
    assert f"repo1-s3-bucket={made}\n" in conf


def test_the_prod_stack_file_builds() -> None:
    raw = cm.stack_file("prod")
    run = cm.run(raw, "prod")
    assert len(run.mocks.of_type(INSTANCE)) == 1 + int(raw["replicas"])
    for inst in run.mocks.of_type(INSTANCE):
        assert inst.get("instanceType") == raw["aws"]["instance_type"]


def test_testinfra_hosts_hash_what_cloud_init_writes(prod: cm.Run,
                                                     cfg: config.PlatformConfig) -> None:
    hosts = prod.outputs["testinfra_hosts"]
    ips = {r.name.removesuffix("-eni"): r.outputs["privateIp"] for r in
           prod.mocks.of_type("aws:ec2/networkInterface:NetworkInterface")}
    assert [(h["name"], h["role"], h["spec"]) for h in hosts] == [
        ("primary", "primary", f"ssh://admin@{ips['primary']}"),
        ("replica-1", "replica", f"ssh://admin@{ips['replica-1']}"),
        ("replica-2", "replica", f"ssh://admin@{ips['replica-2']}"),
        ("pooler", "pooler", f"ssh://admin@{ips['primary']}")]   # PgBouncer on the primary
    by_name = {h["name"]: h for h in hosts}
    for name in ("primary", "replica-1", "replica-2"):
        host = by_name[name]
        assert host["service_user"] == "postgres"
        assert host["data_dir"] == "/var/lib/postgresql/15/main"
        files = written(prod.mocks.one(INSTANCE, name))
        for path, digest in host["files"].items():
            assert digest == sha256(files[path]), (name, path)
        assert {"/etc/pg-platform/postgresql.conf", "/etc/pg-platform/pg_hba.conf"} <= set(
            host["files"])
    primary = by_name["primary"]
    assert primary["pgbackrest_config"] == "/etc/pg-platform/pgbackrest.conf"
    assert "/etc/systemd/system/pg-platform-backup-incr.timer" in primary["files"]
    assert "/etc/pg-platform/pgbackrest.conf" in primary["files"]
    pooler = by_name["pooler"]
    assert pooler["pooler_ini"] == "/etc/pgbouncer/pgbouncer.ini"
    assert pooler["auth_file"] == "/etc/pgbouncer/userlist.txt"
    assert pooler["files"] == {"/etc/pgbouncer/pgbouncer.ini": sha256(
        written(prod.mocks.one(INSTANCE, "primary"))["/etc/pg-platform/pgbouncer.ini"])}
    # Nothing from the hosts' secret bundles: no password, verifier or digest of one.
    text = repr(hosts)
    for version in prod.mocks.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        value = version.get("secretString")
        assert value not in text
        if version.name.endswith("-files-value"):
            for f in json.loads(value)["files"]:
                assert sha256(f["content"]) not in text
                assert all(f["path"] not in h["files"] for h in hosts)
    for role in ("platform_owner", "app", "replicator", "pgbouncer_admin"):
        pw = prod.mocks.password(role)
        assert pw not in text and scram.verifier(role, pw) not in text


def test_testinfra_hosts_parse_as_the_suite_reads_them(prod: cm.Run) -> None:
    parsed = exported_inventory(prod.outputs)
    assert [h.role for h in parsed] == ["primary", "replica", "replica", "pooler"]
    assert all(h.spec.startswith("ssh://admin@10.") and h.files for h in parsed)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
