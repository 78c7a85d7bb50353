"""A first `up` runs without its preview (infra/ops/first_up.py): what the preview would
have refused on an empty stack, the update's own program run must refuse, with the same
one-line message, before it makes anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.ops import first_up
from tests import ports
from tests.engine import ThrowawayStack

pytestmark = [pytest.mark.engine]


@pytest.fixture
def empty() -> Iterator[ThrowawayStack]:
    s = ThrowawayStack("firstup", {})
    try:
        s.init()
        yield s
    finally:
        s.remove()


@pytest.mark.parametrize(("settings", "message"), [
    ({"replicas": 6}, "pg-platform:replicas=6: allowed range is 0 to 5"),
    ({"ha": {"manager": "patroni", "ttl": 19}},
     "pg-platform:ha.ttl=19: allowed range is 20 to 3600"),
    ({"postgres": {"parameters": {"archive_command": "/bin/true"}}},
     "pg-platform:postgres.parameters.archive_command"),
])
def test_a_first_up_without_preview_refuses_bad_settings_before_it_makes_anything(
        empty: ThrowawayStack, settings: dict[str, Any], message: str) -> None:
    empty.set_config({"postgres": {"port": ports.stack_port()}, **settings})
    flags = first_up.up_flags(empty.name, empty.project, empty.env)
    assert flags == [first_up.SKIP]  # the path `make up` and ThrowawayStack.up take
    proc = empty.pulumi("up", "--yes", *flags, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert "Traceback" not in out
    # Nothing was made: the state holds no resource, the state dir no server.
    assert first_up.up_flags(empty.name, empty.project, empty.env) == [first_up.SKIP]
    assert not empty.state_dir.exists() or not any(empty.state_dir.iterdir())
