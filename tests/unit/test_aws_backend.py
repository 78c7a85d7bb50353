"""The prod (AWS) program under Pulumi mocks: resources, security, user-data, bundles."""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from infra import config, render, roles, scram
from infra.backends import aws_userdata as ud
from infra.backends.aws_volumes import VolumeGuardProvider, volume_options
from infra.errors import ConfigError
from infra.hostagent import apply as applier
from policy import validators
from tests.infra.inventory import exported_inventory
from tests.unit import cloud_mocks as cm

INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
ENI = "aws:ec2/networkInterface:NetworkInterface"
PINS = {"postgresql-15": "15.10-1.pgdg120+1", "postgresql-15-postgis-3": "3.5.0+dfsg-1.pgdg120+1",
        "timescaledb-2-postgresql-15": "2.17.2~debian12", "pgbouncer": "1.18.0-1+deb12u1",
        "pgbackrest": "2.45-1", "prometheus-postgres-exporter": "0.11.1-3+b5",
        "prometheus-pgbouncer-exporter": "1.7-2.1"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0cGxhdGZvcm0tdGVzdC1rZXktMDAwMDAwMDAwMA ops@example"
RAW: dict[str, Any] = {
    "replicas": 2,
    "postgres": {"port": 5432},
    "aws": {"region": "eu-west-1", "vpc_id": "vpc-0123456789abcdef0",
            "vpc_cidr": "10.0.0.0/16",
            "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            "allowed_cidrs": ["10.20.0.0/16"],
            "allowed_security_groups": ["sg-0123456789abcdef0"],
            "ami": "ami-0123456789abcdef0", "package_versions": PINS,
            "ssh_public_keys": [KEY], "ssh_cidrs": ["10.30.0.0/24"],
            "prometheus_cidrs": ["10.40.0.0/24"]},
    "backup": {"s3": {"bucket": "acme-pg-backups", "path": "/pgbackrest/prod"}},
}
ROLES = ("platform_owner", "app", "replicator", "pgbouncer_admin", roles.MONITOR,
         roles.TENANT_ADMIN)


@pytest.fixture(scope="module")
def prod() -> cm.Run:
    return cm.run(RAW, "prod")


@pytest.fixture(scope="module")
def cfg() -> config.PlatformConfig:
    return config.load(RAW, "prod")


def user_data_text(instance: cm.Recorded) -> str:
    """The document cloud-init reads: plain, or gzip+base64 past EC2's 16 KiB."""
    plain, packed = instance.get("userData"), instance.get("userDataBase64")
    assert (plain is None) != (packed is None)
    text = plain if plain is not None else gzip.decompress(base64.b64decode(packed)).decode()
    assert isinstance(text, str)
    return text


def cloud_config(instance: cm.Recorded) -> dict[str, Any]:
    text = user_data_text(instance)
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def written(instance: cm.Recorded) -> dict[str, str]:
    return {f["path"]: f["content"] for f in cloud_config(instance)["write_files"]}


def bundle(run: cm.Run, host: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(run.mocks.one(VERSION, f"{host}-files-value")
                                        .get("secretString"))
    return loaded


def bundle_files(run: cm.Run, host: str) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in bundle(run, host)["files"]}


def ips(run: cm.Run) -> list[str]:
    found = {r.name.removesuffix("-eni"): r.outputs["privateIp"] for r in run.mocks.of_type(ENI)}
    return [found[n] for n in sorted(found, key=lambda n: (n != "primary", n))]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_resource_types_and_counts(prod: cm.Run) -> None:
    c = Counter(r.typ for r in prod.mocks.resources)
    hosts = 1 + 2
    for typ in (INSTANCE, "aws:ebs/volume:Volume", "aws:ec2/volumeAttachment:VolumeAttachment",
                ENI, "aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile",
                "aws:iam/rolePolicy:RolePolicy", "pulumi-python:dynamic/aws:VolumeGuard",
                cm.HOST_CERT):
        assert c[typ] == hosts, typ
    assert c["aws:ec2/securityGroup:SecurityGroup"] == 1
    # 2 ports x (1 CIDR + 1 SG) + SSH + 2 exporters + replication between members.
    assert c[INGRESS] == 8
    assert c["aws:s3/bucketV2:BucketV2"] == 1
    assert c[cm.STACK_CA] == 1 and c["pulumi-python:dynamic/hosts:Converged"] == 1
    # 6 role passwords + 1 bundle per host.
    assert c["aws:secretsmanager/secret:Secret"] == 6 + hosts
    assert c[VERSION] == 6 + hosts


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


def test_instances_imdsv2_encrypted_and_never_replaced_for_user_data(prod: cm.Run) -> None:
    for inst in prod.mocks.of_type(INSTANCE):
        assert inst.get("metadataOptions")["httpTokens"] == "required"
        root = inst.get("rootBlockDevice")
        assert root["encrypted"] is True and root["volumeType"] == "gp3"
        assert inst.get("networkInterfaces")[0]["deviceIndex"] == 0
        assert inst.get("iamInstanceProfile") == f"{inst.name}-profile-autonamed"
        assert inst.get("ami") == RAW["aws"]["ami"]
        assert inst.get("userDataReplaceOnChange") is False
    for vol in prod.mocks.of_type("aws:ebs/volume:Volume"):
        assert vol.get("encrypted") is True and vol.get("type") == "gp3"
        assert vol.get("availabilityZone") == cm.AZ


def test_ingress_only_from_configured_sources(prod: cm.Run) -> None:
    rules = prod.mocks.of_type(INGRESS)
    sources = {(r.get("fromPort"), r.get("cidrIpv4") or r.get("referencedSecurityGroupId"))
               for r in rules}
    assert sources == {(5432, "10.20.0.0/16"), (6432, "10.20.0.0/16"),
                       (5432, "sg-0123456789abcdef0"), (6432, "sg-0123456789abcdef0"),
                       (5432, "db-sg-id"), (22, "10.30.0.0/24"),
                       (9187, "10.40.0.0/24"), (9127, "10.40.0.0/24")}


def test_each_host_role_reads_only_its_own_bundle(prod: cm.Run) -> None:
    bucket_arn = "arn:aws:mock:::backup-bucket"
    for host in ("primary", "replica-1", "replica-2"):
        policy = json.loads(prod.mocks.one("aws:iam/rolePolicy:RolePolicy",
                                           f"{host}-policy").get("policy"))
        by_sid = {s["Sid"]: s for s in policy["Statement"]}
        assert by_sid["OwnBundle"]["Resource"] == f"arn:aws:mock:::{host}-files"
        assert by_sid["OwnStatus"]["Resource"] == (
            f"{bucket_arn}/pg-platform-status/prod/{host}.json")
        assert "s3:*" not in json.dumps(policy) and "*" not in json.dumps(
            by_sid["OwnBundle"])
        if host == "primary":
            assert by_sid["RepoObjects"]["Resource"] == f"{bucket_arn}/pgbackrest/prod/*"
            assert by_sid["ListRepo"]["Condition"] == {
                "StringLike": {"s3:prefix": ["pgbackrest/prod/*"]}}
        else:
            assert "RepoObjects" not in by_sid      # replicas have no repository
    bucket = prod.mocks.one("aws:s3/bucketV2:BucketV2", "backup-bucket")
    assert bucket.get("bucket") == "acme-pg-backups" and not bucket.get("forceDestroy")


def test_user_data_holds_identity_packages_and_applier_only(prod: cm.Run) -> None:
    for inst in prod.mocks.of_type(INSTANCE):
        files = written(inst)
        assert not any(p.endswith((".conf", ".ini", "userlist.txt")) and "pg-platform" in p
                       and p != "/etc/postgresql-common/createcluster.conf" for p in files)
        assert files[ud.APPLIER] == Path(applier.__file__).read_text()
        assert files["/etc/pg-platform/packages"].split() == [f"{k}={v}" for k, v in
                                                              PINS.items()]
        setup = files["/usr/local/sbin/pgp-setup"]
        assert "apt-mark hold" in setup and "wait_for" in setup
        assert "Restart=on-failure" in files["/etc/systemd/system/pg-platform-setup.service"]
        assert "OnUnitInactiveSec" in files["/etc/systemd/system/pg-platform-apply.timer"]


def test_user_data_fits_ec2s_limit(prod: cm.Run) -> None:
    """16 KiB before base64; past it the same document goes gzip-compressed."""
    for inst in prod.mocks.of_type(INSTANCE):
        packed = inst.get("userDataBase64")
        raw = base64.b64decode(packed) if packed else inst.get("userData").encode()
        assert len(raw) <= ud.USER_DATA_LIMIT, inst.name


def test_unpinned_packages_are_refused_naming_them() -> None:
    raw = {**RAW, "aws": {**RAW["aws"], "package_versions": {"pgbouncer": "1.18.0-1"}}}
    with pytest.raises(ConfigError, match="package_versions: no version for postgresql-15"):
        cm.run(raw, "prod")


def test_bundle_files_are_the_shared_renderings_with_tls(prod: cm.Run,
                                                         cfg: config.PlatformConfig) -> None:
    addr = ips(prod)
    files = bundle_files(prod, "primary")
    paths = render.HostPaths(data_dir="/var/lib/postgresql/15/main",
                             socket_dir="/var/run/postgresql",
                             pgbackrest_config="/etc/pg-platform/pgbackrest.conf")
    conf = files["/etc/pg-platform/postgresql.conf"]["content"]
    assert conf == render.postgresql_conf(cfg, paths, timescaledb=True, listen="0.0.0.0",
                                          tls=ud.TLS)
    assert "ssl = on" in conf and "max_slot_wal_keep_size = '64GB'" in conf
    hba = files["/etc/pg-platform/pg_hba.conf"]["content"]
    assert hba == render.pg_hba_conf(cfg, ("10.0.0.0/16", "10.20.0.0/16"), ident_map=False,
                                     tls=True)
    lines = [ln.split() for ln in hba.splitlines() if ln and not ln.startswith("#")]
    assert {ln[0] for ln in lines} == {"local", "hostssl"}
    assert all(ln[-1] in ("scram-sha-256", "peer") for ln in lines)
    ini = files[ud.POOLER_INI]["content"]
    assert ini == render.pgbouncer_ini(
        cfg, render.PoolerPaths(auth_file=ud.AUTH_FILE, socket_dir="/var/run/postgresql"),
        render.PoolerTargets(listen_address="0.0.0.0", primary_host=addr[0],
                             primary_port=5432, replica_hosts=tuple(addr[1:]),
                             replica_port=5432), ud.TLS)
    assert "client_tls_sslmode = require" in ini and "server_tls_sslmode = verify-full" in ini
    assert "repo1-s3-key-type=auto" in files[ud.PGBACKREST_CONF]["content"]
    # Scheduled backups: a systemd timer and service per type, no cron file.
    assert {p for p in files if p.startswith("/etc/systemd/system/pg-platform-backup-")} == {
        f"/etc/systemd/system/pg-platform-backup-{k}.{u}"
        for k in ("full", "diff", "incr") for u in ("service", "timer")}
    assert "OnCalendar=Sun *-*-* 01:00:00 UTC\n" in files[
        "/etc/systemd/system/pg-platform-backup-full.timer"]["content"]
    assert not any("cron" in p for p in files)


def test_pg_hba_admits_the_poolers_own_connection(prod: cm.Run) -> None:
    """The review's critical finding: PgBouncer dialled 127.0.0.1, which pg_hba refused."""
    files = bundle_files(prod, "primary")
    ini = files[ud.POOLER_INI]["content"]
    line = next(ln for ln in ini.splitlines() if ln.startswith("platform = "))
    host = dict(kv.split("=", 1) for kv in line.split(" = ", 1)[1].split())["host"]
    assert host == ips(prod)[0] and host != "127.0.0.1"
    nets = [ln.split()[3] for ln in files["/etc/pg-platform/pg_hba.conf"]["content"]
            .splitlines() if ln.startswith("hostssl") and ln.split()[1] == "all"]
    assert any(ipaddress.ip_address(host) in ipaddress.ip_network(n) for n in nets)


def test_replicas_stream_over_verified_tls_through_their_slot(prod: cm.Run) -> None:
    addr = ips(prod)
    for i in (1, 2):
        files = bundle_files(prod, f"replica-{i}")
        conf = files["/etc/pg-platform/postgresql.conf"]["content"]
        assert (f"primary_conninfo = 'host={addr[0]} port=5432 user=replicator "
                f"passfile={ud.PASSFILE} application_name=replica_{i} sslmode=verify-full "
                f"sslrootcert={ud.TLS.ca_file}'") in conf
        assert f"primary_slot_name = 'replica_{i}'" in conf
        env = written(prod.mocks.one(INSTANCE, f"replica-{i}"))["/etc/pg-platform/host.env"]
        assert f"PRIMARY_HOST={addr[0]}\n" in env and f"SLOT=replica_{i}\n" in env
        assert ud.POOLER_INI not in files
        assert not bundle(prod, f"replica-{i}")["sql"]
    assert bundle(prod, "primary")["slots"] == ["replica_1", "replica_2"]


def test_pgbouncer_file_limit_fits_max_client_conn(prod: cm.Run,
                                                   cfg: config.PlatformConfig) -> None:
    drop_in = bundle_files(prod, "primary")[ud.POOLER_LIMITS]
    limit = int(drop_in["content"].split("LimitNOFILE=")[1])
    assert limit >= cfg.pooler.max_client_conn + cfg.postgres.max_connections
    assert drop_in["then"] == ["daemon-reload", "restart:pgbouncer.service"]


def test_no_secret_in_user_data_and_no_host_holds_anothers(prod: cm.Run) -> None:
    pws = {r: prod.mocks.password(r) for r in ROLES}
    verifiers = {r: scram.verifier(r, p) for r, p in pws.items()}
    for inst in prod.mocks.of_type(INSTANCE):
        assert not cm.contains_secret(inst.inputs), inst.name
        text = user_data_text(inst)
        for secret in [*pws.values(), *verifiers.values(), "key-"]:
            assert secret not in text
    for version in prod.mocks.of_type(VERSION):
        assert cm.is_secret(version.inputs["secretString"]), version.name
    texts = {h: json.dumps(bundle(prod, h)) for h in ("primary", "replica-1", "replica-2")}
    assert "key-primary-tls" in texts["primary"]
    for host, text in texts.items():
        for other in texts:
            if other != host:
                assert f"key-{other}-tls" not in text      # its own TLS key only
        if host != "primary":
            for role in ("platform_owner", "app", "pgbouncer_admin", roles.TENANT_ADMIN):
                assert pws[role] not in text and verifiers[role] not in text
    primary = bundle_files(prod, "primary")
    assert primary[ud.AUTH_FILE]["mode"] == "0600"
    assert primary[ud.TLS.key_file]["mode"] == "0600"
    # No password for the break-glass superuser exists at all: peer on the socket only.
    assert not [r for r in prod.mocks.of_type(cm.PASSWORD) if r.name == "postgres-password"]
    setup = written(prod.mocks.one(INSTANCE, "primary"))["/usr/local/sbin/pgp-setup"]
    assert "--auth-local=peer" in setup and "pwfile" not in setup
    assert not any(f["path"].startswith(ud.DATA_MOUNT) for f in bundle(prod, "primary")["files"])


def test_roles_sql_sets_verifiers_never_passwords(prod: cm.Run) -> None:
    sql = bundle(prod, "primary")["sql"]
    for role in ("platform_owner", "app", "replicator", roles.MONITOR, roles.TENANT_ADMIN):
        assert scram.verifier(role, prod.mocks.password(role)) in sql
        assert prod.mocks.password(role) not in sql
    assert "NOSUPERUSER" in sql and "SUPERUSER " not in sql.replace("NOSUPERUSER ", "")


def test_bundle_versions_are_checked_by_the_applier(prod: cm.Run) -> None:
    for host in ("primary", "replica-1", "replica-2"):
        b = bundle(prod, host)
        applier.check_bundle(b)
        assert b["report"] == {"bucket": "acme-pg-backups", "region": "eu-west-1",
                               "key": f"pg-platform-status/prod/{host}.json"}
    waiter = prod.mocks.one("pulumi-python:dynamic/hosts:Converged", "hosts-converged")
    assert cm.plain(waiter.inputs["versions"]) == {
        h: bundle(prod, h)["version"] for h in ("primary", "replica-1", "replica-2")}


def test_ssh_keys_for_the_amis_login_user_travel_in_the_bundle(prod: cm.Run) -> None:
    for host in ("primary", "replica-1"):
        keys = bundle_files(prod, host)["/home/admin/.ssh/authorized_keys"]
        assert KEY in keys["content"] and keys["owner"] == "admin"
        assert (keys["mode"], keys["dir_mode"]) == ("0600", "0700")


def test_outputs_verify_the_stacks_ca(prod: cm.Run) -> None:
    out = prod.outputs
    assert all(out["secret"].values())
    assert len(out["replica_dsns"]) == 2
    assert out["ca_cert"] == "ca-cert-tls-ca"
    for name in ("primary_dsn", "app_dsn", "pooler_dsn", "pooler_admin_dsn"):
        info = conninfo_to_dict(out[name])
        assert info["sslmode"] == "verify-full" and str(info["sslrootcert"]).endswith("ca.crt")
    primary = conninfo_to_dict(out["primary_dsn"])
    assert primary["user"] == "platform_owner"    # the schema step runs as the owner
    pooler = conninfo_to_dict(out["pooler_dsn"])
    assert (pooler["port"], pooler["dbname"], pooler["user"]) == ("6432", "platform", "app")


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
    conf = bundle_files(run, "primary")[ud.PGBACKREST_CONF]["content"]
    assert f"repo1-s3-bucket={made}\n" in conf


def test_the_prod_stack_file_builds() -> None:
    raw = cm.stack_file("prod")
    run = cm.run(raw, "prod")
    assert len(run.mocks.of_type(INSTANCE)) == 1 + int(raw["replicas"])
    for inst in run.mocks.of_type(INSTANCE):
        assert inst.get("instanceType") == raw["aws"]["instance_type"]


def test_testinfra_hosts_hash_what_the_bundle_installs(prod: cm.Run) -> None:
    hosts = prod.outputs["testinfra_hosts"]
    addr = dict(zip(("primary", "replica-1", "replica-2"), ips(prod), strict=True))
    assert [(h["name"], h["role"], h["spec"]) for h in hosts] == [
        ("primary", "primary", f"ssh://admin@{addr['primary']}"),
        ("replica-1", "replica", f"ssh://admin@{addr['replica-1']}"),
        ("replica-2", "replica", f"ssh://admin@{addr['replica-2']}"),
        ("pooler", "pooler", f"ssh://admin@{addr['primary']}")]   # PgBouncer on the primary
    by_name = {h["name"]: h for h in hosts}
    for name in ("primary", "replica-1", "replica-2"):
        host = by_name[name]
        assert host["service_user"] == "postgres"
        assert host["data_dir"] == "/var/lib/postgresql/15/main"
        files = bundle_files(prod, name)
        for path, digest in host["files"].items():
            assert digest == sha256(files[path]["content"]), (name, path)
        assert {"/etc/pg-platform/postgresql.conf", "/etc/pg-platform/pg_hba.conf"} <= set(
            host["files"])
    primary = by_name["primary"]
    assert primary["pgbackrest_config"] == "/etc/pg-platform/pgbackrest.conf"
    assert {"/etc/systemd/system/pg-platform-backup-incr.timer", ud.PGBACKREST_CONF} <= set(
        primary["files"])
    pooler = by_name["pooler"]
    assert (pooler["pooler_ini"], pooler["auth_file"]) == (ud.POOLER_INI, ud.AUTH_FILE)
    assert pooler["files"] == {ud.POOLER_INI: sha256(
        bundle_files(prod, "primary")[ud.POOLER_INI]["content"])}
    # Nothing secret: no password, verifier, key or a digest of a 0600 file.
    text = repr(hosts)
    for host in ("primary", "replica-1", "replica-2"):
        for f in bundle(prod, host)["files"]:
            if f["mode"] == "0600":
                assert sha256(f["content"]) not in text
                assert all(f["path"] not in h["files"] for h in hosts)
    for role in ROLES:
        pw = prod.mocks.password(role)
        assert pw not in text and scram.verifier(role, pw) not in text


def test_testinfra_hosts_parse_as_the_suite_reads_them(prod: cm.Run) -> None:
    parsed = exported_inventory(prod.outputs)
    assert [h.role for h in parsed] == ["primary", "replica", "replica", "pooler"]
    assert all(h.spec.startswith("ssh://admin@10.") and h.files for h in parsed)


def test_login_user_comes_from_the_ami_setting() -> None:
    raw = {**RAW, "aws": {**RAW["aws"], "login_user": "ubuntu"}}
    run = cm.run(raw, "prod")
    assert all(h["spec"].startswith("ssh://ubuntu@") for h in run.outputs["testinfra_hosts"])
    assert "/home/ubuntu/.ssh/authorized_keys" in bundle_files(run, "primary")


@pytest.mark.parametrize(("key", "value"), [("kms_key_id", "arn:aws:kms:eu-west-1:1:key/x"),
                                            ("availability_zone", "eu-west-1b")])
def test_a_change_that_would_replace_a_data_volume_is_refused(key: str, value: str) -> None:
    olds = {"volume": "primary-data", "availability_zone": "eu-west-1a", "kms_key_id": "",
            "allow_data_loss": False}
    with pytest.raises(ConfigError) as err:
        VolumeGuardProvider().diff("id", olds, {**olds, key: value})
    assert "allow_data_loss" in str(err.value) and repr(value) in str(err.value)
    allowed = VolumeGuardProvider().diff("id", olds, {**olds, key: value,
                                                      "allow_data_loss": True})
    assert allowed.replaces == []      # the guard lets it through; the volume is retained


def test_data_volumes_are_protected_and_retained(cfg: config.PlatformConfig) -> None:
    import pulumi

    parent = guard = pulumi.ComponentResource.__new__(pulumi.ComponentResource)
    opts = volume_options(cfg, parent, guard)
    assert opts.protect is True and opts.retain_on_delete is True
    loose = volume_options(config.load({**RAW, "allow_data_loss": True}, "prod"), parent, guard)
    assert loose.protect is False and loose.retain_on_delete is True


def test_exporters_log_in_as_their_roles_over_tls_with_passfiles(prod: cm.Run) -> None:
    addr = ips(prod)
    for i, host in enumerate(("primary", "replica-1", "replica-2")):
        files = bundle_files(prod, host)
        defaults = files["/etc/default/prometheus-postgres-exporter"]["content"]
        assert f"host={addr[i]} " in defaults and f"user={roles.MONITOR} " in defaults
        assert "sslmode=verify-full" in defaults and "password" not in defaults
        passfile = files["/var/lib/prometheus/.pgpass"]
        assert passfile["owner"] == "prometheus" and passfile["mode"] == "0600"
        assert prod.mocks.password(roles.MONITOR) in passfile["content"]
    primary = bundle_files(prod, "primary")
    conf = primary["/etc/prometheus-pgbouncer-exporter.conf"]["content"]
    assert f"pgbouncer-host = {addr[0]}\n" in conf and "password" not in conf
    assert "PGSSLMODE=verify-full" in primary[
        "/etc/systemd/system/prometheus-pgbouncer-exporter.service.d/pg-platform.conf"]["content"]
    assert "prometheus-pgbouncer-exporter.service" in bundle(prod, "primary")["enable"]
    assert "/etc/prometheus-pgbouncer-exporter.conf" not in bundle_files(prod, "replica-1")
