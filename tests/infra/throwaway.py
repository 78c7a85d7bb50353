"""One throw-away local stack, brought up once per test session and shared.

`tests/integration/test_infra_suite.py`, `test_faults.py` and `test_security.py`
all need a whole platform made by `pulumi up`; one stack serves them all, so
`make test` pays for one `up` and one `destroy`. It is removed when the
session ends (pytest's config cleanup), whatever happened.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.backends.local_ha_layout import ETCD_HOSTS
from tests import ports
from tests.engine import ThrowawayStack

NAME = "infra"
TENANTS = [{"slug": "acme", "name": "Acme", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "free"},
           {"slug": "initech", "name": "Initech", "plan": "standard"}]
_KEY = pytest.StashKey[ThrowawayStack]()


def settings(ha_manager: str | None = None) -> dict[str, Any]:
    """A primary whose port + 1 is free on the replica's address, and a pooler port.

    `ha_manager` patroni (`pytest --ha-manager=patroni`): the same stack run by Patroni,
    with etcd, REST and HAProxy ports free on every loopback address they use.
    """
    if ha_manager == "patroni":
        return patroni_settings()
    return {"replicas": 1, "tenants": TENANTS,
            "postgres": {"port": ports.stack_port(), "max_connections": 60,
                         "shared_buffers": "32MB"},
            "pooler": {"port": ports.free_port(), "default_pool_size": 10}}


def patroni_settings() -> dict[str, Any]:
    pg, cport, pport, rport, hport, bport = ports.ha_ports(ETCD_HOSTS)
    return {"replicas": 1, "tenants": TENANTS,
            "postgres": {"port": pg, "max_connections": 60, "shared_buffers": "32MB"},
            "pooler": {"port": bport, "default_pool_size": 10, "server_login_retry": 0.25},
            "ha": {"manager": "patroni", "etcd_client_port": cport, "etcd_peer_port": pport,
                   "restapi_port": rport, "haproxy_port": hport}}


def shared_stack(config: pytest.Config) -> ThrowawayStack:
    """The session's stack, up; made on first use."""
    if _KEY in config.stash:
        return config.stash[_KEY]
    manager = config.getoption("--ha-manager", default=None)
    stack = ThrowawayStack(NAME, settings(manager))
    config.add_cleanup(stack.remove)
    config.stash[_KEY] = stack
    stack.init()
    stack.up()
    return stack
