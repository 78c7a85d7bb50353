"""Run the dev and prod programs under Pulumi's unit-test mocks, recording every resource.

No engine, no plugins, no Docker and no AWS: the mocks answer each resource
registration with its own inputs plus a few outputs the providers would compute
(ids, private IPs, ARNs), and record the inputs as the program sent them,
secrets still marked. Tests then look at the recorded graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

from infra import config

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"
AZ = "eu-west-1a"
# infra/passwords.py: Password(Resource, module="secrets", name="Password")
PASSWORD = "pulumi-python:dynamic/secrets:Password"
STACK_CA = "pulumi-python:dynamic/tls:StackCa"
HOST_CERT = "pulumi-python:dynamic/tls:HostCertificate"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def plain(value: Any) -> Any:
    """The value with every secret wrapper removed, at any depth."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


def _id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:17]


def _host_index(name: str) -> int:
    """primary-eni 0, replica-N-eni N (the hosts' order), anything else after them."""
    host = name.removesuffix("-eni")
    if host == "primary":
        return 0
    if host.startswith("replica-") and host[8:].isdigit():
        return int(host[8:])
    return 50 + int(_id(name), 16) % 100


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]

    def get(self, key: str) -> Any:
        return plain(self.inputs.get(key))


@dataclass
class Recorder(pulumi.runtime.Mocks):
    resources: list[Recorded] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == PASSWORD:
            # Stable per name and rotation, as the real provider's values are per stack.
            outputs["value"] = f"pw-{args.name}-r{args.inputs.get('rotation', 0)}"
        elif args.typ == STACK_CA:
            outputs.update(caCert=f"ca-cert-{args.name}", caKey=f"ca-key-{args.name}",
                           ca_cert=f"ca-cert-{args.name}", ca_key=f"ca-key-{args.name}")
        elif args.typ == HOST_CERT:
            hosts = ",".join(args.inputs.get("hosts") or [])
            outputs.update(cert=f"cert-{args.name}-{hosts}", key=f"key-{args.name}")
        elif args.typ == "aws:ec2/networkInterface:NetworkInterface":
            # By host, not by registration order: the same host keeps its address and
            # ids whatever else a config change adds, as it does in AWS.
            outputs["privateIp"] = f"10.0.1.{10 + _host_index(args.name)}"
            rid = f"eni-{_id(args.name)}"
        elif args.typ == "aws:ec2/instance:Instance":
            outputs["availabilityZone"] = AZ
            rid = f"i-{_id(args.name)}"
        elif args.typ == "aws:ebs/volume:Volume":
            rid = f"vol-{_id(args.name)}"
        elif args.typ.startswith("aws:"):
            outputs.setdefault("arn", f"arn:aws:mock:::{args.name}")
            outputs.setdefault("name", f"{args.name}-autonamed")   # Pulumi's auto-naming
        if args.typ == "aws:s3/bucketV2:BucketV2":
            outputs.setdefault("bucket", args.inputs.get("bucket", args.name))
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = f"sha256:{args.inputs.get('name')}"
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs), outputs))
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ec2/getSubnet:getSubnet":
            return {"id": args.args.get("id"), "availabilityZone": AZ,
                    "vpcId": "vpc-0123456789abcdef0"}
        return {}

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str) -> Recorded:
        found = [r for r in self.of_type(typ) if r.name == name]
        assert len(found) == 1, f"expected one {typ} named {name}, got {len(found)}"
        return found[0]

    def password(self, role: str) -> str:
        """The value the mocks generated for a role's Password resource."""
        return str(self.one(PASSWORD, f"{role}-password")
                   .outputs["value"])


@dataclass
class Run:
    mocks: Recorder
    outputs: dict[str, Any]


def run(raw: dict[str, Any], stack: str) -> Run:
    """Build the Platform component from stack config under fresh mocks."""
    cfg = config.load(raw, stack)
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project=config.PROJECT, stack=stack, preview=False)
    from infra.platform import Platform

    result: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any]:
        outs = Platform("platform", cfg).endpoints.outputs()
        names = list(outs)
        values = [outs[n] for n in names]

        def keep(found: list[Any]) -> None:
            half = len(names)
            result.update(zip(names, found[:half], strict=True))
            # Which outputs are secrets: every DSN must be, testinfra_hosts is plain.
            result["secret"] = {n: f for n, f in zip(names, found[half:], strict=True)
                                if n.endswith(("_dsn", "_dsns"))}
            result["plain"] = [n for n, f in zip(names, found[half:], strict=True) if not f]

        flags = [v.is_secret() for v in values]
        return pulumi.Output.all(*values, *flags).apply(keep)

    program()
    return Run(mocks=mocks, outputs=result)


def stack_file(stack: str) -> dict[str, Any]:
    """A committed stack file's pg-platform settings, decoded as config.from_pulumi does."""
    path = Path(__file__).resolve().parents[2] / f"Pulumi.{stack}.yaml"
    return config.decode(yaml.safe_load(path.read_text())["config"])
