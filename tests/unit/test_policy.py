"""Each guardrail passes a safe resource and fails a deliberately insecure one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from policy import validators as v


@dataclass
class Args:
    resource_type: str
    props: dict[str, Any]


@dataclass
class Res:
    resource_type: str
    urn: str
    props: dict[str, Any] = field(default_factory=dict)
    property_dependencies: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class Stack:
    resources: list[Res]


def violations(fn: Any, args: Any) -> list[str]:
    found: list[str] = []
    fn(args, lambda message, *_: found.append(message))
    return found


SG = "aws:ec2/securityGroup:SecurityGroup"
RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


@pytest.mark.parametrize("args", [
    Args(INGRESS, {"fromPort": 5432, "toPort": 5432, "ipProtocol": "tcp",
                   "cidrIpv4": "0.0.0.0/0"}),
    Args(INGRESS, {"fromPort": 6432, "toPort": 6432, "ipProtocol": "tcp",
                   "cidrIpv6": "::/0"}),
    Args(INGRESS, {"ipProtocol": "-1", "cidrIpv4": "0.0.0.0/0"}),
    Args(RULE, {"type": "ingress", "fromPort": 5000, "toPort": 7000, "protocol": "tcp",
                "cidrBlocks": ["10.0.0.0/8", "0.0.0.0/0"]}),
    Args(SG, {"ingress": [{"fromPort": 5432, "toPort": 5432, "protocol": "tcp",
                           "cidrBlocks": ["0.0.0.0/0"]}]}),
])
def test_world_ingress_on_db_ports_is_refused(args: Args) -> None:
    assert violations(v.no_world_ingress_on_db_ports, args)


@pytest.mark.parametrize("args", [
    Args(INGRESS, {"fromPort": 5432, "toPort": 5432, "ipProtocol": "tcp",
                   "cidrIpv4": "10.20.0.0/16"}),
    Args(INGRESS, {"fromPort": 443, "toPort": 443, "ipProtocol": "tcp",
                   "cidrIpv4": "0.0.0.0/0"}),
    Args(RULE, {"type": "egress", "fromPort": 5432, "toPort": 5432, "protocol": "tcp",
                "cidrBlocks": ["0.0.0.0/0"]}),
    Args(SG, {"ingress": [{"fromPort": 5432, "toPort": 5432, "protocol": "tcp",
                           "securityGroups": ["sg-0123abcd"]}]}),
])
def test_narrow_or_unrelated_ingress_passes(args: Args) -> None:
    assert violations(v.no_world_ingress_on_db_ports, args) == []


def test_docker_ports_must_be_on_loopback() -> None:
    typ = "docker:index/container:Container"
    bad = Args(typ, {"ports": [{"internal": 5432, "external": 5432}]})
    good = Args(typ, {"ports": [{"internal": 5432, "external": 5432, "ip": "127.0.0.1"}]})
    assert "0.0.0.0" in violations(v.docker_ports_on_loopback, bad)[0]
    assert violations(v.docker_ports_on_loopback, good) == []


def test_volumes_must_be_encrypted() -> None:
    vol = "aws:ebs/volume:Volume"
    inst = "aws:ec2/instance:Instance"
    assert violations(v.encrypted_volumes, Args(vol, {"encrypted": False}))
    assert violations(v.encrypted_volumes, Args(vol, {}))
    assert violations(v.encrypted_volumes, Args(inst, {"rootBlockDevice": {"volumeSize": 20}}))
    assert violations(v.encrypted_volumes, Args(inst, {
        "rootBlockDevice": {"encrypted": True},
        "ebsBlockDevices": [{"deviceName": "/dev/sdg", "encrypted": False}]}))
    assert violations(v.encrypted_volumes, Args(vol, {"encrypted": True})) == []
    assert violations(v.encrypted_volumes, Args(inst, {
        "rootBlockDevice": {"encrypted": True}})) == []


def test_imdsv2_is_required() -> None:
    inst = "aws:ec2/instance:Instance"
    assert violations(v.imdsv2_required, Args(inst, {}))
    assert violations(v.imdsv2_required, Args(inst, {"metadataOptions": {
        "httpTokens": "optional"}}))
    assert violations(v.imdsv2_required, Args(inst, {"metadataOptions": {
        "httpTokens": "required"}})) == []


@pytest.mark.parametrize(("typ", "bad", "good"), [
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
     {"blockPublicAcls": True, "blockPublicPolicy": False, "ignorePublicAcls": True,
      "restrictPublicBuckets": True},
     {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
      "restrictPublicBuckets": True}),
    ("aws:s3/bucketVersioningV2:BucketVersioningV2",
     {"versioningConfiguration": {"status": "Suspended"}},
     {"versioningConfiguration": {"status": "Enabled"}}),
    ("aws:s3/bucketServerSideEncryptionConfigurationV2:"
     "BucketServerSideEncryptionConfigurationV2", {"rules": []},
     {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]}),
    ("aws:s3/bucketV2:BucketV2", {"acl": "public-read"}, {"bucket": "b"}),
])
def test_bucket_companions_cannot_weaken_it(typ: str, bad: dict[str, Any],
                                            good: dict[str, Any]) -> None:
    assert violations(v.bucket_settings_safe, Args(typ, bad))
    assert violations(v.bucket_settings_safe, Args(typ, good)) == []


def _bucket_stack(*companions: str) -> Stack:
    bucket = Res("aws:s3/bucketV2:BucketV2", "urn:bucket")
    other = Res("aws:s3/bucketV2:BucketV2", "urn:other")
    return Stack([bucket, other, *[
        Res(v._COMPANIONS[c], f"urn:{c}", property_dependencies={"bucket": [bucket]})
        for c in companions]])


def test_a_bucket_missing_a_companion_is_reported() -> None:
    found = violations(v.backup_buckets_private_encrypted_versioned,
                       _bucket_stack("private", "versioned", "encrypted"))
    # `other` has none of the three; `bucket` has all of them.
    assert len(found) == 1 and "urn:other" in found[0]
    found = violations(v.backup_buckets_private_encrypted_versioned,
                       _bucket_stack("private", "encrypted"))
    assert any("urn:bucket" in f and "versioned" in f for f in found)


def test_every_rule_is_registered_once() -> None:
    names = [r.name for r in v.RULES]
    assert len(names) == len(set(names))
    assert {r.validate for r in v.RULES} >= {
        v.no_world_ingress_on_db_ports, v.encrypted_volumes, v.imdsv2_required,
        v.backup_buckets_private_encrypted_versioned}
