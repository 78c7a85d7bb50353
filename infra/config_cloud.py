"""Settings of the dev (Docker) and prod (AWS) backends.

Kept apart from infra/config.py so the backends' settings can grow without
crowding the shared ones. Each parser validates its whole section even when
its backend is not the stack's (a typo in a stack file is caught either way),
then returns None unless its backend is the one the stack uses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from infra.config import Section
from infra.errors import ConfigError

DEFAULT_IMAGE = "timescale/timescaledb-ha:pg15"
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
_AWS_ID = {
    "vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
    "sg": re.compile(r"^sg-[0-9a-f]{8,17}$"),
    "ami": re.compile(r"^ami-[0-9a-f]{8,17}$"),
}
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_KMS = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+$")


@dataclass(frozen=True)
class DockerSettings:
    """The dev stack: containers on the local Docker engine."""

    image: str = DEFAULT_IMAGE
    pooler_image: str = ""          # empty: the database image, which ships pgbouncer
    network_subnet: str = "172.28.16.0/24"
    keep_image: bool = True


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


def _bool(sec: Section, name: str, default: bool) -> bool:
    value = sec.get(name, default)
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected true or false")
    return value


def _pattern(sec: Section, name: str, default: str, pattern: re.Pattern[str],
             allowed: str, *, required: bool = False) -> str:
    value = sec.get(name, default)
    if required and value in (None, ""):
        raise ConfigError(f"{sec.where(name)}: required; expected {allowed}")
    if value == "" and not required:
        return ""
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected {allowed}")
    return value


def _cidr(where: str, value: object, *, allow_world: bool = False) -> str:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise ConfigError(f"{where}={value!r}: expected an IPv4 or IPv6 network such as "
                          "'10.0.0.0/16' (host bits zero)") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}={value!r}: expected a CIDR string such as '10.0.0.0/16'")
    if net.prefixlen == 0 and not allow_world:
        raise ConfigError(f"{where}={value!r}: the whole internet may not reach the database "
                          "or pooler ports; list the client networks or security groups")
    return str(net)


def _list(sec: Section, name: str, *, required: bool = False) -> list[object]:
    value = sec.get(name, [])
    if isinstance(value, str) or not isinstance(value, list):
        raise ConfigError(f"{sec.where(name)}={value!r}: expected a list")
    if required and not value:
        raise ConfigError(f"{sec.where(name)}: required; expected a non-empty list")
    return value


def _ids(sec: Section, name: str, kind: str, *, required: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(_list(sec, name, required=required)):
        if not isinstance(item, str) or not _AWS_ID[kind].match(item):
            raise ConfigError(f"{sec.where(f'{name}[{i}]')}={item!r}: expected a {kind} id "
                              f"such as '{kind}-0123456789abcdef0'")
        if item in out:
            raise ConfigError(f"{sec.where(f'{name}[{i}]')}={item!r}: listed twice")
        out.append(item)
    return tuple(out)


def parse_docker(sec: Section, backend: str) -> DockerSettings | None:
    """`pg-platform:docker`; checked even on other stacks so typos never hide."""
    allowed_image = "an image reference such as 'timescale/timescaledb-ha:pg15'"
    image = _pattern(sec, "image", DEFAULT_IMAGE, _IMAGE, allowed_image, required=True)
    pooler = _pattern(sec, "pooler_image", "", _IMAGE, allowed_image)
    subnet = _cidr(sec.where("network_subnet"), sec.get("network_subnet", "172.28.16.0/24"))
    if ipaddress.ip_network(subnet).num_addresses < 8:
        raise ConfigError(f"{sec.where('network_subnet')}={subnet!r}: too small; allowed are "
                          "networks with room for the primary, 5 replicas and the pooler (/29 "
                          "or larger)")
    settings = DockerSettings(image=image, pooler_image=pooler, network_subnet=subnet,
                              keep_image=_bool(sec, "keep_image", True))
    sec.finish()
    return settings if backend == "docker" else None


def parse_aws(sec: Section, backend: str) -> AwsSettings | None:
    """`pg-platform:aws`; network ids are required only when the stack uses AWS."""
    need = backend == "aws"
    region = _pattern(sec, "region", "us-east-1", _REGION, "an AWS region such as 'eu-west-1'",
                      required=True)
    vpc_id = _pattern(sec, "vpc_id", "", _AWS_ID["vpc"], "a VPC id such as 'vpc-0abc12345'",
                      required=need)
    raw_vpc_cidr = sec.get("vpc_cidr", "")
    vpc_cidr = _cidr(sec.where("vpc_cidr"), raw_vpc_cidr) if raw_vpc_cidr or need else ""
    cidrs = tuple(_cidr(sec.where(f"allowed_cidrs[{i}]"), c)
                  for i, c in enumerate(_list(sec, "allowed_cidrs")))
    groups = _ids(sec, "allowed_security_groups", "sg")
    kms = _pattern(sec, "kms_key_arn", "", _KMS, "a KMS key or alias ARN")
    settings = AwsSettings(
        region=region, vpc_id=vpc_id, vpc_cidr=vpc_cidr,
        subnet_ids=_ids(sec, "subnet_ids", "subnet", required=need),
        allowed_cidrs=cidrs, allowed_security_groups=groups,
        ami=_pattern(sec, "ami", "", _AWS_ID["ami"],
                     "a Debian 12 AMI id such as 'ami-0abc1234def567890'", required=need),
        instance_type=_pattern(sec, "instance_type", "m6i.large", _INSTANCE_TYPE,
                               "an EC2 instance type such as 'm6i.large'", required=True),
        root_volume_gb=sec.int("root_volume_gb", 20, 8, 1024),
        data_volume_gb=sec.int("data_volume_gb", 100, 10, 16384),
        data_volume_iops=sec.int("data_volume_iops", 3000, 3000, 16000),
        data_volume_throughput=sec.int("data_volume_throughput", 125, 125, 1000),
        kms_key_arn=kms,
        noncurrent_version_days=sec.int("noncurrent_version_days", 30, 1, 3650),
        secret_recovery_days=sec.int("secret_recovery_days", 7, 7, 30),
        ssm_managed=_bool(sec, "ssm_managed", True),
    )
    sec.finish()
    return settings if need else None

