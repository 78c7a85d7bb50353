"""The prod program under Pulumi mocks, with the addresses and ids the harness chose.

The host tier boots what `pulumi up` would hand EC2: each instance's user-data and
each host's Secrets Manager bundle, exactly as the program renders them. Only the
values a cloud would compute come from here: private addresses (the harness's
bridge subnet), volume ids (the loop devices' stand-in ids), the bucket's name, and
the secrets' ids (their names, which Secrets Manager accepts as `SecretId`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra import config
from tests.unit import cloud_mocks as cm

INSTANCE = "aws:ec2/instance:Instance"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
SCHEMA = "pulumi-python:dynamic/sql:Schema"
POLICIES = "pulumi-python:dynamic/sql:TimescalePolicies"
ACCOUNT = "123456789012"


def settings(subnet: str) -> dict[str, Any]:
    """Pulumi.prod.yaml's settings, scaled to a shared 2-core machine and this subnet.

    Everything that shapes the bootstrap (backend, versions, roles, pooler mode,
    backup to S3, schedule, tenants) is the committed prod stack's; only sizes,
    the replica count and the network change.
    """
    raw = copy.deepcopy(cm.stack_file("prod"))
    raw["replicas"] = 1
    raw["aws"].update({"vpc_cidr": subnet, "allowed_cidrs": [subnet]})
    raw["postgres"].update({"max_connections": 60, "shared_buffers": "64MB",
                            "effective_cache_size": "256MB", "work_mem": "4MB",
                            "maintenance_work_mem": "64MB"})
    raw["pooler"].update({"default_pool_size": 10, "reserve_pool_size": 2,
                          "max_client_conn": 200})
    raw["backup"].update({"process_max": 1})
    return raw


@dataclass
class Mocks(cm.Recorder):
    """cm.Recorder with the harness's addresses and ids."""

    ips: dict[str, str] = field(default_factory=dict)          # eni name -> address
    volume_ids: dict[str, str] = field(default_factory=dict)   # volume name -> vol-...

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "aws:ec2/networkInterface:NetworkInterface":
            outputs["privateIp"] = self.ips[args.name.removesuffix("-eni")]
        elif args.typ == "aws:ebs/volume:Volume":
            rid = self.volume_ids[args.name.removesuffix("-data")]
        elif args.typ == SECRET:
            name = f"pg-platform/{args.name}"
            outputs["arn"] = name
            rid = name
        self.resources[-1].outputs = outputs
        return rid, outputs


@dataclass(frozen=True)
class HostPlan:
    name: str              # primary, replica-1
    ip: str
    volume_id: str
    user_data: str         # the #cloud-config document
    secret_id: str
    bundle: str            # the Secrets Manager value (JSON)


@dataclass
class Rendered:
    raw: dict[str, Any]
    cfg: config.PlatformConfig
    hosts: list[HostPlan]
    outputs: dict[str, Any]
    passwords: dict[str, str]        # Password resource name -> value
    schema_props: dict[str, Any]
    policy_props: dict[str, Any]
    bucket: str


def _props(rec: cm.Recorded) -> dict[str, Any]:
    return {k: cm.plain(v) for k, v in rec.inputs.items() if k != "__provider"}


def render(raw: dict[str, Any], ips: dict[str, str], volume_ids: dict[str, str]) -> Rendered:
    """Run the prod program once under mocks; `ips` and `volume_ids` are keyed by host."""
    cfg = config.load(raw, "prod")
    mocks = Mocks(ips=ips, volume_ids=volume_ids)
    pulumi.runtime.set_mocks(mocks, project=config.PROJECT, stack="prod", preview=False)
    from infra.platform import Platform

    result: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any]:
        outs = Platform("platform", cfg).endpoints.outputs()
        names = list(outs)
        return pulumi.Output.all(*[outs[n] for n in names]).apply(
            lambda vals: result.update(zip(names, vals, strict=True)))

    program()
    versions = {r.name.removesuffix("-value"): r for r in mocks.of_type(SECRET_VERSION)}
    hosts = []
    for name in ips:
        inst = mocks.one(INSTANCE, name)
        text = inst.get("userData")
        if not text:
            raise RuntimeError(f"{name}: the program gave gzip user-data; the harness reads "
                               "plain #cloud-config only")
        hosts.append(HostPlan(
            name=name, ip=ips[name], volume_id=volume_ids[name], user_data=str(text),
            secret_id=f"pg-platform/{name}-files",
            bundle=str(versions[f"{name}-files"].get("secretString"))))
    bucket = mocks.of_type("aws:s3/bucketV2:BucketV2")[0].outputs["bucket"]
    return Rendered(
        raw=raw, cfg=cfg, hosts=hosts, outputs=result,
        passwords={r.name: str(r.outputs["value"]) for r in mocks.of_type(cm.PASSWORD)},
        schema_props=_props(mocks.of_type(SCHEMA)[0]),
        policy_props=_props(mocks.of_type(POLICIES)[0]), bucket=str(bucket))
