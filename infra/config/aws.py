"""`pg-platform:aws`: the prod stack's EC2 hosts in an existing VPC, backups in S3.

Validated on every stack, so a typo never hides; the network ids are required
only when the stack uses the aws backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.config.section import Section, cidr
from infra.errors import ConfigError

_AWS_ID = {
    "vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
    "sg": re.compile(r"^sg-[0-9a-f]{8,17}$"),
    "ami": re.compile(r"^ami-[0-9a-f]{8,17}$"),
}
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_LOGIN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/=]+( [^\n]*)?$")
_PIN = re.compile(r"^[A-Za-z0-9.+~:-]+$")
# What user-data installs on every host; each must be pinned in `aws.package_versions`,
# so a rebuilt host gets the versions the running ones have (docs/day2.md).
PACKAGES = ("postgresql-{v}", "postgresql-{v}-postgis-3", "timescaledb-2-postgresql-{v}",
            "pgbouncer", "pgbackrest", "prometheus-postgres-exporter",
            "prometheus-pgbouncer-exporter")
# ... and, with `ha.manager: patroni`, these (pinned the same way).
HA_PACKAGES = ("patroni", "etcd-server", "haproxy")
_KMS = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+$")


@dataclass(frozen=True)
class AwsSettings:
    """The prod stack: EC2 hosts in an existing VPC, backups in S3."""

    region: str = "us-east-1"
    vpc_id: str = ""
    vpc_cidr: str = ""
    subnet_ids: tuple[str, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    allowed_security_groups: tuple[str, ...] = ()
    ami: str = ""
    instance_type: str = "m6i.large"
    root_volume_gb: int = 20
    data_volume_gb: int = 100
    data_volume_iops: int = 3000
    data_volume_throughput: int = 125
    kms_key_arn: str = ""           # empty: the AWS-managed keys for EBS, S3 and secrets
    # The backup bucket's name, path and schedule are `pg-platform:backup` settings.
    noncurrent_version_days: int = 30
    secret_recovery_days: int = 7
    ssm_managed: bool = True
    # Access path: the AMI's login user (Debian's cloud images: `admin`), the SSH keys
    # allowed to log in as it, and who may reach port 22.
    login_user: str = "admin"
    ssh_public_keys: tuple[str, ...] = ()
    ssh_cidrs: tuple[str, ...] = ()
    # Who may scrape the exporters (9187, 9127): the Prometheus servers' networks.
    prometheus_cidrs: tuple[str, ...] = ()
    # apt versions of PACKAGES ({v}: postgres.version), e.g. {"pgbouncer": "1.18.0-1+deb12u1"}.
    package_versions: tuple[tuple[str, str], ...] = ()

    def pins(self, pg_version: int, ha: bool = False) -> tuple[tuple[str, str], ...]:
        """(package, version) for every package the hosts install, in install order;
        `ha`: with Patroni's (HA_PACKAGES)."""
        check_pins(self, pg_version, ha)
        found = dict(self.package_versions)
        return tuple((name, found[name]) for name in packages(pg_version, ha))


def packages(pg_version: int, ha: bool) -> tuple[str, ...]:
    return tuple(p.format(v=pg_version) for p in PACKAGES) + (HA_PACKAGES if ha else ())


def _ids(sec: Section, name: str, kind: str, *, required: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(sec.list(name, required=required)):
        if not isinstance(item, str) or not _AWS_ID[kind].match(item):
            raise ConfigError(f"{sec.where(f'{name}[{i}]')}={item!r}: expected a {kind} id "
                              f"such as '{kind}-0123456789abcdef0'")
        if item in out:
            raise ConfigError(f"{sec.where(f'{name}[{i}]')}={item!r}: listed twice")
        out.append(item)
    return tuple(out)


def _keys(sec: Section) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(sec.list("ssh_public_keys")):
        if not isinstance(item, str) or not _SSH_KEY.match(item.strip()):
            raise ConfigError(f"{sec.where(f'ssh_public_keys[{i}]')}: expected one OpenSSH "
                              "public key line ('ssh-ed25519 AAAA... comment')")
        out.append(item.strip())
    return tuple(out)


def _pins(sec: Section) -> tuple[tuple[str, str], ...]:
    raw = sec.get("package_versions", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{sec.where('package_versions')}={raw!r}: expected a mapping of "
                          "apt package names to versions")
    pins = []
    for name, version in sorted(raw.items()):
        if not isinstance(version, str) or not _PIN.match(version):
            raise ConfigError(f"{sec.where(f'package_versions.{name}')}={version!r}: expected "
                              "an apt version such as '1.18.0-1+deb12u1' (apt-cache policy "
                              f"{name} on a host lists them)")
        pins.append((str(name), version))
    return tuple(pins)


def check_pins(settings: AwsSettings, pg_version: int, ha: bool = False) -> None:
    """Every package the hosts install is pinned: a rebuilt host must not get newer ones."""
    have = dict(settings.package_versions)
    missing = [p for p in packages(pg_version, ha) if p not in have]
    if missing:
        raise ConfigError(f"pg-platform:aws.package_versions: no version for {', '.join(missing)}"
                          "; pin every package the hosts install (apt-cache policy NAME on a "
                          "host lists the candidates)")


def parse_aws(sec: Section, backend: str) -> AwsSettings | None:
    """`pg-platform:aws`; network ids are required only when the stack uses AWS."""
    need = backend == "aws"
    d = AwsSettings()
    region = sec.pattern("region", d.region, _REGION, "an AWS region such as 'eu-west-1'",
                         required=True)
    vpc_id = sec.pattern("vpc_id", d.vpc_id, _AWS_ID["vpc"], "a VPC id such as 'vpc-0abc12345'",
                         required=need)
    raw_vpc_cidr = sec.get("vpc_cidr", d.vpc_cidr)
    vpc_cidr = cidr(sec.where("vpc_cidr"), raw_vpc_cidr) if raw_vpc_cidr or need else ""
    cidrs = tuple(cidr(sec.where(f"allowed_cidrs[{i}]"), c)
                  for i, c in enumerate(sec.list("allowed_cidrs")))
    groups = _ids(sec, "allowed_security_groups", "sg")
    kms = sec.pattern("kms_key_arn", d.kms_key_arn, _KMS, "a KMS key or alias ARN")
    settings = AwsSettings(
        region=region, vpc_id=vpc_id, vpc_cidr=vpc_cidr,
        subnet_ids=_ids(sec, "subnet_ids", "subnet", required=need),
        allowed_cidrs=cidrs, allowed_security_groups=groups,
        ami=sec.pattern("ami", d.ami, _AWS_ID["ami"],
                        "a Debian 12 AMI id such as 'ami-0abc1234def567890'", required=need),
        instance_type=sec.pattern("instance_type", d.instance_type, _INSTANCE_TYPE,
                                  "an EC2 instance type such as 'm6i.large'", required=True),
        root_volume_gb=sec.int("root_volume_gb", d.root_volume_gb, 8, 1024),
        data_volume_gb=sec.int("data_volume_gb", d.data_volume_gb, 10, 16384),
        data_volume_iops=sec.int("data_volume_iops", d.data_volume_iops, 3000, 16000),
        data_volume_throughput=sec.int("data_volume_throughput", d.data_volume_throughput,
                                       125, 1000),
        kms_key_arn=kms,
        noncurrent_version_days=sec.int("noncurrent_version_days", d.noncurrent_version_days,
                                        1, 3650),
        secret_recovery_days=sec.int("secret_recovery_days", d.secret_recovery_days, 7, 30),
        ssm_managed=sec.flag("ssm_managed", d.ssm_managed, strings=True),
        login_user=sec.pattern("login_user", d.login_user, _LOGIN,
                               "the AMI's login user, such as 'admin' (Debian) or 'ubuntu'"),
        ssh_public_keys=_keys(sec),
        ssh_cidrs=tuple(cidr(sec.where(f"ssh_cidrs[{i}]"), c)
                        for i, c in enumerate(sec.list("ssh_cidrs"))),
        prometheus_cidrs=tuple(cidr(sec.where(f"prometheus_cidrs[{i}]"), c)
                               for i, c in enumerate(sec.list("prometheus_cidrs"))),
        package_versions=_pins(sec),
    )
    sec.finish()
    return settings if need else None
