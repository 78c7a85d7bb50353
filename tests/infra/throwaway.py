"""One throw-away local stack, brought up once per test session and shared.

`tests/integration/test_infra_suite.py`, `test_faults.py` and `test_security.py`
all need a whole platform made by `pulumi up`; one stack serves them all, so
`make test` pays for one `up` and one `destroy`. It is removed when the
session ends (pytest's config cleanup), whatever happened.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import ports
from tests.engine import ThrowawayStack

NAME = "infra"
TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "free"},
           {"slug": "initech", "name": "Initech", "plan": "standard"}]
_KEY = pytest.StashKey[ThrowawayStack]()


def settings() -> dict[str, Any]:
    """A primary whose port + 1 is free on the replica's address, and a pooler port."""
    return {"replicas": 1, "tenants": TENANTS,
            "postgres": {"port": ports.stack_port(), "max_connections": 60,
                         "shared_buffers": "32MB"},
            "pooler": {"port": ports.free_port(), "default_pool_size": 10}}


def shared_stack(config: pytest.Config) -> ThrowawayStack:
    """The session's stack, up; made on first use."""
    if _KEY in config.stash:
        return config.stash[_KEY]
    stack = ThrowawayStack(NAME, settings())
    config.add_cleanup(stack.remove)
    config.stash[_KEY] = stack
    stack.init()
    stack.up()
    return stack
