"""`pulumi preview` of a throw-away stack refuses a sample of the bad-value battery.

The real engine runs the program; each value from the issue's Why is refused
before any resource is registered, naming the key and the value, with no
traceback. The whole battery (60 values) runs against the loader in
tests/unit/test_config_battery.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests import ports
from tests.engine import ThrowawayStack

pytestmark = pytest.mark.engine

PORT = 6000
# (id, settings, what the message must hold)
SAMPLE: list[tuple[str, dict[str, Any], str]] = [
    ("work_mem 3TB", {"postgres": {"work_mem": "3TB"}}, "pg-platform:postgres.work_mem='3TB'"),
    ("shared_buffers 100TB", {"postgres": {"shared_buffers": "100TB"}},
     "pg-platform:postgres.shared_buffers='100TB'"),
    ("cron 61 25", {"backup": {"schedule": {"full": "61 25 * * *"}}},
     "pg-platform:backup.schedule.full='61 25 * * *'"),
    ("cron */0", {"backup": {"schedule": {"incr": "*/0 * * * *"}}},
     "pg-platform:backup.schedule.incr='*/0 * * * *'"),
    ("pooler.port = postgres.port", {"postgres": {"port": PORT}, "pooler": {"port": PORT}},
     f"pg-platform:pooler.port={PORT}: collides with pg-platform:postgres.port"),
    ("state_dir ../../../etc/x", {"state_dir": "../../../etc/x"},
     "pg-platform:state_dir='../../../etc/x'"),
    ("state_dir /", {"state_dir": "/"}, "pg-platform:state_dir='/'"),
    ("database template1", {"postgres": {"database": "template1"}},
     "pg-platform:postgres.database='template1'"),
    ("role pg_evil", {"postgres": {"app_role": "pg_evil"}},
     "pg-platform:postgres.app_role='pg_evil'"),
    ("tenant name 500", {"tenants": [{"slug": "acme", "name": "N" * 500}]},
     "(500 characters)"),
    ("database newline", {"postgres": {"database": "platform\n"}},
     "pg-platform:postgres.database='platform\\n'"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    s = ThrowawayStack("battery", {})  # preview only: nothing listens, no port is taken
    s.init()
    try:
        yield s
    finally:
        s.remove()


def _refused(stack: ThrowawayStack, expected: str) -> None:
    proc = stack.preview(check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in text, text[-2000:]
    assert "Traceback" not in text
    assert not list(stack.state_dir.glob("*")), "a resource was made before the refusal"


@pytest.mark.parametrize(("settings", "expected"), [s[1:] for s in SAMPLE],
                         ids=[s[0] for s in SAMPLE])
def test_preview_refuses_the_value_naming_key_and_value(stack: ThrowawayStack,
                                                        settings: dict[str, Any],
                                                        expected: str) -> None:
    stack.set_config(settings)
    _refused(stack, expected)


def test_preview_refuses_a_port_another_stack_file_uses(stack: ThrowawayStack) -> None:
    port = ports.stack_port()
    other = stack.project / "Pulumi.neighbour.yaml"
    other.write_text(yaml.safe_dump({"config": {
        "pg-platform:postgres": {"port": port},
        "pg-platform:state_dir": str(stack.base / "other")}}))
    try:
        stack.set_config({"postgres": {"port": port}})
        _refused(stack, f"pg-platform:postgres.port={port}: stack 'neighbour'")
    finally:
        other.unlink()
