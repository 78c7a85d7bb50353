"""The prod program under Pulumi mocks, with the addresses and ids the harness chose.

The host tier boots what `pulumi up` would hand EC2: each instance's user-data and
each host's Secrets Manager bundle, exactly as the program renders them. Only the
values a cloud would compute come from here: private addresses (the harness's
bridge subnet), volume ids (the loop devices' stand-in ids), the bucket's name, and
the secrets' ids (their names, which Secrets Manager accepts as `SecretId`).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

import dill
import pulumi

from infra import config
from infra.config.aws import HA_PACKAGES
from tests.unit import cloud_mocks as cm

INSTANCE = "aws:ec2/instance:Instance"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
SCHEMA = "pulumi-python:dynamic/sql:Schema"
POLICIES = "pulumi-python:dynamic/sql:TimescalePolicies"
CONVERGED = "pulumi-python:dynamic/hosts:Converged"   # day2: pulumi up waits for the hosts
ACCOUNT = "123456789012"


def settings(subnet: str, ssh_key: str, installed: dict[str, str],
             state_dir: str, replicas: int = 1,
             changes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Pulumi.prod.yaml's settings, scaled to a shared 2-core machine and this subnet.

    Everything that shapes the bootstrap (backend, versions, roles, pooler mode,
    backup to S3, schedule, tenants) is the committed prod stack's; only sizes,
    the replica count, `ha.manager` (none unless `changes` say), `state_dir` (the
    run's) and the network change, and where the stack file has them, the access key
    (the harness's), the CIDRs for SSH and Prometheus (the subnet) and the package pins
    (the versions the cached rootfs holds, `installed`).
    `changes` (per section, merged) are a module's own settings, e.g. `ha`.
    """
    raw = copy.deepcopy(cm.stack_file("prod"))
    raw["replicas"] = replicas
    # The stack file runs Patroni, which needs three hosts (etcd's quorum): a module
    # that boots it says so in `changes`; the others prove the hand-supervised path.
    raw["ha"] = {"manager": "none"}
    for section, values in (changes or {}).items():
        raw.setdefault(section, {}).update(values)
    raw["state_dir"] = state_dir
    raw["aws"].update({"vpc_cidr": subnet, "allowed_cidrs": [subnet]})
    aws = raw["aws"]
    if "ssh_public_keys" in aws:
        aws["ssh_public_keys"] = [ssh_key.strip()]
    for key in ("ssh_cidrs", "prometheus_cidrs"):
        if key in aws:
            aws[key] = [subnet]
    if "package_versions" in aws:
        # Patroni's, etcd's and HAProxy's pins count only with `ha.manager: patroni`
        # (tests/hosts/test_patroni_boot.py sets it).
        wanted = [n for n in aws["package_versions"]
                  if n not in HA_PACKAGES or raw["ha"].get("manager") == "patroni"]
        missing = sorted(set(wanted) - set(installed))
        if missing:
            raise RuntimeError(f"the cached rootfs lacks {missing}, which "
                               "pg-platform:aws.package_versions pins (tests/hosts/rootfs.py)")
        aws["package_versions"] = {n: installed[n] for n in wanted}
    raw["postgres"].update({"max_connections": 60, "shared_buffers": "64MB",
                            "effective_cache_size": "256MB", "work_mem": "4MB",
                            "maintenance_work_mem": "64MB"})
    raw["pooler"].update({"default_pool_size": 10, "reserve_pool_size": 2,
                          "max_client_conn": 200})
    raw["backup"].update({"process_max": 1})
    return raw


# Dynamic resources whose real provider runs under the mocks, because the hosts need
# their real outputs (a CA and certificates that TLS handshakes accept).
# CaFile writes the CA where the DSNs' sslrootcert points: under `state_dir`, which
# the harness sets to its run directory.
REAL_PROVIDERS = ("pulumi-python:dynamic/tls:StackCa",
                  "pulumi-python:dynamic/tls:HostCertificate",
                  "pulumi-python:dynamic/tls:CaFile")


def _real_create(args: pulumi.runtime.MockResourceArgs,
                 state: dict[str, tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """What the engine does with a dynamic resource: the pickled provider's `create`.
    `state` keeps the result per name and inputs, so a second rendering with the same
    inputs gets the same outputs, as `pulumi up` keeps a resource whose inputs did not
    change."""
    props = {k: cm.plain(v) for k, v in args.inputs.items() if k != "__provider"}
    key = f"{args.typ}::{args.name}::{json.dumps(props, sort_keys=True, default=str)}"
    if key not in state:
        provider = dill.loads(base64.b64decode(cm.plain(args.inputs["__provider"])))
        made = provider.create(props)
        state[key] = (str(made.id), dict(made.outs or {}))
    return state[key]


@dataclass
class Mocks(cm.Recorder):
    """cm.Recorder with the harness's addresses and ids, and real TLS material."""

    ips: dict[str, str] = field(default_factory=dict)          # eni name -> address
    volume_ids: dict[str, str] = field(default_factory=dict)   # volume name -> vol-...
    state: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ in REAL_PROVIDERS:
            rid, outs = _real_create(args, self.state)
            self.resources.append(cm.Recorded(args.typ, args.name, dict(args.inputs), outs))
            return rid, outs
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
    converged_props: dict[str, Any] | None = None
    converged_provider: str = ""     # the pickled provider, as the engine would run it


def _props(rec: cm.Recorded) -> dict[str, Any]:
    return {k: cm.plain(v) for k, v in rec.inputs.items() if k != "__provider"}


def render(raw: dict[str, Any], ips: dict[str, str], volume_ids: dict[str, str],
           state: dict[str, tuple[str, dict[str, Any]]] | None = None) -> Rendered:
    """Run the prod program once under mocks; `ips` and `volume_ids` are keyed by host;
    pass the same `state` to each rendering of one platform."""
    cfg = config.load(raw, "prod")
    mocks = Mocks(ips=ips, volume_ids=volume_ids, state={} if state is None else state)
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
        text = inst.get("userData") or gzip.decompress(
            base64.b64decode(inst.get("userDataBase64"))).decode()
        hosts.append(HostPlan(
            name=name, ip=ips[name], volume_id=volume_ids[name], user_data=str(text),
            secret_id=f"pg-platform/{name}-files",
            bundle=str(versions[f"{name}-files"].get("secretString"))))
    bucket = mocks.of_type("aws:s3/bucketV2:BucketV2")[0].outputs["bucket"]
    return Rendered(
        raw=raw, cfg=cfg, hosts=hosts, outputs=result,
        passwords={r.name: str(r.outputs["value"]) for r in mocks.of_type(cm.PASSWORD)},
        schema_props=_props(mocks.of_type(SCHEMA)[0]),
        policy_props=_props(mocks.of_type(POLICIES)[0]), bucket=str(bucket),
        converged_props=next((_props(c) for c in mocks.of_type(CONVERGED)), None),
        converged_provider=next((str(cm.plain(c.inputs["__provider"]))
                                 for c in mocks.of_type(CONVERGED)), ""))
