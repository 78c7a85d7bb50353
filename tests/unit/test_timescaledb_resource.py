"""The policies resource: what makes preview show a change, and what does not."""

from __future__ import annotations

from typing import Any

from infra import config
from infra.timescaledb.resource import PROVIDER_VERSION, PoliciesProvider


def props(**settings: str) -> dict[str, Any]:
    cfg = config.load({"timescaledb": settings} if settings else {}, "t")
    return {"dsn": "postgresql://secret", "settings": cfg.timescaledb.policy_inputs(),
            "provider_version": PROVIDER_VERSION, "target_id": "sys-1"}


def test_a_policy_setting_change_is_a_diff_and_a_password_rotation_is_not() -> None:
    p = PoliciesProvider()
    assert p.diff("x", props(), props()).changes is False
    assert p.diff("x", props(), props(retention="30 days")).changes is True
    assert p.diff("x", props(), props(compress_after="3 days")).changes is True
    assert p.diff("x", props(), {**props(), "dsn": "postgresql://rotated"}).changes is False
    assert p.diff("x", props(), {**props(), "target_id": "sys-2"}).changes is True  # rebuilt
    # job_runner is not a policy: it belongs to the runner process, not this resource.
    assert p.diff("x", props(), props(job_runner="supervised")).changes is False
