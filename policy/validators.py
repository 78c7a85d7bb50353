"""Guardrails for what a pg-platform plan may do, as plain callables.

Each validator takes the arguments pulumi-policy passes (anything with
`resource_type` and `props`, or `resources` for stack validators) and a
`report` callback, so tests call them with hand-built arguments. The
PolicyPack that serves them lives in __main__.py, which tests never import:
constructing it starts a server.

Property names are the engine's (camelCase), as the policy SDK sees them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DB_PORTS = (5432, 6432)
LOOPBACK = ("127.0.0.1", "::1")
_COMPANIONS_SSE = ("aws:s3/bucketServerSideEncryptionConfigurationV2:"
                   "BucketServerSideEncryptionConfigurationV2")
Report = Callable[..., None]


class ResourceArgs(Protocol):
    resource_type: str
    props: Mapping[str, Any]


class StackResource(Protocol):
    resource_type: str
    props: Mapping[str, Any]
    urn: str
    property_dependencies: Mapping[str, list[Any]]


class StackArgs(Protocol):
    resources: list[StackResource]


def _covers_db_port(from_port: Any, to_port: Any, protocol: Any) -> bool:
    if str(protocol) in ("-1", "all"):
        return True
    if from_port is None or to_port is None:
        return True     # unknown ports at preview: judge on the CIDR alone
    return any(int(from_port) <= p <= int(to_port) for p in DB_PORTS)


def _world(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False


def _world_rules(args: ResourceArgs) -> Iterable[tuple[Any, Any, Any, list[Any]]]:
    """(from, to, protocol, cidrs) for every ingress rule the resource declares."""
    p = args.props
    if args.resource_type == "aws:ec2/securityGroup:SecurityGroup":
        for rule in p.get("ingress") or []:
            yield (rule.get("fromPort"), rule.get("toPort"), rule.get("protocol"),
                   [*(rule.get("cidrBlocks") or []), *(rule.get("ipv6CidrBlocks") or [])])
    elif args.resource_type == "aws:ec2/securityGroupRule:SecurityGroupRule":
        if p.get("type") == "ingress":
            yield (p.get("fromPort"), p.get("toPort"), p.get("protocol"),
                   [*(p.get("cidrBlocks") or []), *(p.get("ipv6CidrBlocks") or [])])
    elif args.resource_type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        yield (p.get("fromPort"), p.get("toPort"), p.get("ipProtocol"),
               [c for c in (p.get("cidrIpv4"), p.get("cidrIpv6")) if c])


def no_world_ingress_on_db_ports(args: ResourceArgs, report: Report) -> None:
    """PostgreSQL (5432) and PgBouncer (6432) must never be open to the whole internet."""
    for lo, hi, proto, cidrs in _world_rules(args):
        if _covers_db_port(lo, hi, proto) and any(_world(c) for c in cidrs):
            report(f"ingress from {', '.join(str(c) for c in cidrs if _world(c))} reaches "
                   f"ports {lo}-{hi}, which include the database or pooler ports "
                   f"{DB_PORTS}; allow only client networks or security groups")


def docker_ports_on_loopback(args: ResourceArgs, report: Report) -> None:
    """The dev stack's containers publish ports on the loopback address only."""
    if args.resource_type != "docker:index/container:Container":
        return
    for port in args.props.get("ports") or []:
        ip = port.get("ip") or "0.0.0.0"
        if ip not in LOOPBACK:
            report(f"container port {port.get('internal')} is published on {ip}; "
                   f"allowed addresses are {', '.join(LOOPBACK)}")


def encrypted_volumes(args: ResourceArgs, report: Report) -> None:
    """Every EBS volume, root or data, is encrypted at rest."""
    p = args.props
    if args.resource_type == "aws:ebs/volume:Volume" and p.get("encrypted") is not True:
        report("EBS volume is not encrypted; set encrypted=True")
    elif args.resource_type == "aws:ec2/instance:Instance":
        root = p.get("rootBlockDevice") or {}
        if root.get("encrypted") is not True:
            report("instance root volume is not encrypted; set root_block_device.encrypted")
        for dev in p.get("ebsBlockDevices") or []:
            if dev.get("encrypted") is not True:
                report(f"instance volume {dev.get('deviceName')} is not encrypted")
    elif args.resource_type == "aws:ec2/launchTemplate:LaunchTemplate":
        for dev in p.get("blockDeviceMappings") or []:
            if (dev.get("ebs") or {}).get("encrypted") not in (True, "true"):
                report(f"launch template volume {dev.get('deviceName')} is not encrypted")


def imdsv2_required(args: ResourceArgs, report: Report) -> None:
    """Instances answer metadata requests only with session tokens (IMDSv2)."""
    if args.resource_type not in ("aws:ec2/instance:Instance",
                                  "aws:ec2/launchTemplate:LaunchTemplate"):
        return
    tokens = (args.props.get("metadataOptions") or {}).get("httpTokens")
    if tokens != "required":
        report(f"metadata_options.http_tokens is {tokens!r}; IMDSv2 needs 'required'")


def bucket_settings_safe(args: ResourceArgs, report: Report) -> None:
    """Companion resources of a bucket must not weaken it."""
    p, t = args.props, args.resource_type
    if t == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        off = [k for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                           "restrictPublicBuckets") if p.get(k) is not True]
        if off:
            report(f"public access is not fully blocked: {', '.join(off)} not true")
    elif t == "aws:s3/bucketVersioningV2:BucketVersioningV2":
        status = (p.get("versioningConfiguration") or {}).get("status")
        if status != "Enabled":
            report(f"bucket versioning is {status!r}; backups need 'Enabled'")
    elif t == _COMPANIONS_SSE:
        algos = [((r.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm"))
                 for r in p.get("rules") or []]
        if not algos or any(a not in ("AES256", "aws:kms", "aws:kms:dsse") for a in algos):
            report(f"bucket encryption rules {algos!r}; expected AES256 or aws:kms")
    elif t == "aws:s3/bucketV2:BucketV2" and p.get("acl") in (
            "public-read", "public-read-write", "authenticated-read"):
        report(f"bucket ACL {p.get('acl')!r} makes backups readable by others")


_COMPANIONS = {
    "private": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "versioned": "aws:s3/bucketVersioningV2:BucketVersioningV2",
    "encrypted": _COMPANIONS_SSE,
}


def _bucket_urns(r: StackResource) -> set[str]:
    return {dep.urn for dep in (r.property_dependencies or {}).get("bucket", [])}


def backup_buckets_private_encrypted_versioned(args: StackArgs, report: Report) -> None:
    """Each bucket in the stack has a public-access block, versioning and encryption."""
    buckets = [r for r in args.resources if r.resource_type == "aws:s3/bucketV2:BucketV2"]
    for b in buckets:
        missing = [what for what, typ in _COMPANIONS.items()
                   if not any(r.resource_type == typ and b.urn in _bucket_urns(r)
                              for r in args.resources)]
        if missing:
            report(f"bucket {b.urn} is not {', '.join(missing)}: add the "
                   f"{', '.join(_COMPANIONS[m].split(':')[-1] for m in missing)} resources",
                   b.urn)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    validate: Callable[..., None]
    stack: bool = False


RULES = (
    Rule("no-world-ingress-on-db-ports", "PostgreSQL and PgBouncer ports are never open to "
         "0.0.0.0/0 or ::/0.", no_world_ingress_on_db_ports),
    Rule("docker-ports-on-loopback", "Dev containers publish ports on 127.0.0.1 only.",
         docker_ports_on_loopback),
    Rule("encrypted-volumes", "EBS volumes, root and data, are encrypted.", encrypted_volumes),
    Rule("imdsv2-required", "Instances require IMDSv2 session tokens.", imdsv2_required),
    Rule("backup-bucket-settings", "Bucket companions keep it private, versioned and "
         "encrypted.",
         bucket_settings_safe),
    Rule("backup-bucket-complete", "Every bucket is private, encrypted and versioned.",
         backup_buckets_private_encrypted_versioned, stack=True),
)
