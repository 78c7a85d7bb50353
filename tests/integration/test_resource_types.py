"""Every local resource has a type of its own, and stacks made before the types keep theirs.

Stacks made before infra/resource_types.py hold every dynamic resource as
`pulumi-python:dynamic:Resource`. This test makes such a stack (an `up`, then
the state rewritten to the old types and imported back), and proves that the
typed program neither creates, replaces nor deletes anything in it, and that
after an `up` `pulumi stack --show-urns` names each resource by its own type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from infra.resource_types import UNTYPED
from tests import ports
from tests.engine import ThrowawayStack, stack_up

pytestmark = pytest.mark.engine

TYPED = re.compile(r"pulumi-python:dynamic/[a-z]+:[A-Za-z]+")
EXPECTED = {
    "primary": "pulumi-python:dynamic/local:Primary",
    "database": "pulumi-python:dynamic/local:Database",
    "replica-1": "pulumi-python:dynamic/local:Replica",
    "pooler": "pulumi-python:dynamic/local:Pooler",
    "backup": "pulumi-python:dynamic/local:Backup",
    "backup-scheduler": "pulumi-python:dynamic/local:BackupScheduler",
    "postgres-exporter-primary": "pulumi-python:dynamic/local:Exporter",
    "pgbouncer-exporter": "pulumi-python:dynamic/local:Exporter",
    "tls": "pulumi-python:dynamic/tls:Certificates",
    "tls-files": "pulumi-python:dynamic/tls:Files",
    "platform_owner-password": "pulumi-python:dynamic/secrets:Password",
    "schema": "pulumi-python:dynamic/sql:Schema",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    with stack_up("types", {"postgres": {"port": ports.stack_port()}, "replicas": 1}) as s:
        yield s


def urn_types(stack: ThrowawayStack) -> dict[str, str]:
    """Resource name -> type, from the URNs the engine lists."""
    out = stack.pulumi("stack", "--show-urns").stdout
    found: dict[str, str] = {}
    for urn in re.findall(r"urn:pulumi:\S+", out):
        # urn:pulumi:<stack>::<project>::<parent types $ type>::<name>
        parts = urn.split("::")
        found[parts[-1]] = parts[-2].rsplit("$", 1)[-1]
    return found


def test_old_untyped_stack_keeps_every_resource(stack: ThrowawayStack) -> None:
    state = stack.pulumi("stack", "export").stdout
    typed = set(TYPED.findall(state))
    assert typed >= set(EXPECTED.values()), typed
    old = stack.base / "untyped.json"
    old.write_text(TYPED.sub(UNTYPED, state))
    stack.pulumi("stack", "import", "--file", str(old))
    assert not TYPED.search(stack.pulumi("stack", "export").stdout)
    assert set(urn_types(stack).values()) >= {UNTYPED}

    preview = stack.pulumi("preview", "--expect-no-changes", "--json")
    steps = json.loads(preview.stdout).get("steps", [])
    ops = {s.get("op") for s in steps}
    assert ops <= {"same"}, ops

    stack.up()
    types = urn_types(stack)
    for name, typ in EXPECTED.items():
        assert types.get(name) == typ, (name, types.get(name))
    assert UNTYPED not in types.values()
    assert UNTYPED not in stack.pulumi("stack", "export").stdout


def test_typed_stack_previews_clean(stack: ThrowawayStack) -> None:
    proc = stack.pulumi("preview", "--expect-no-changes")
    assert proc.returncode == 0, proc.stdout[-2000:]
