"""A first `up` skips its preview only on a stack that holds nothing
(infra/ops/first_up.py); tests/integration/test_ha_engine.py checks both paths for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.ops import first_up

EMPTY = {"version": 3, "deployment": {"manifest": {"time": "t"}, "secrets_providers": {}}}
URN = "urn:pulumi:s::pg-platform::pulumi:pulumi:Stack::pg-platform-s"


@pytest.mark.parametrize(("exported", "holds"), [
    (EMPTY, False),                                                       # after stack init
    ({"version": 3, "deployment": {"resources": []}}, False),             # after destroy
    ({"version": 3}, False),
    # after a first `up` whose program refused a setting: only the stack's root
    ({"version": 3, "deployment": {"resources": [{"urn": URN, "type": "pulumi:pulumi:Stack"},
                                                 {"type": "pulumi:providers:pulumi"}]}}, False),
    ({"version": 3, "deployment": {"resources": [
        {"urn": URN, "type": "pulumi:pulumi:Stack"},
        {"type": "pulumi-python:dynamic/secrets:Password"}]}}, True),
    ({"version": 3, "deployment": {"resources": [{"urn": URN}]}}, True),  # no type: keep it
    # An `up` interrupted while its first create ran: preview again, never skip.
    ({"version": 3, "deployment": {"pending_operations": [
        {"resource": {"urn": URN}, "type": "creating"}]}}, True),
])
def test_only_a_stack_holding_nothing_skips_its_preview(exported: dict[str, object],
                                                        holds: bool) -> None:
    assert first_up.holds_resources(exported) is holds


def test_an_unreadable_state_keeps_the_preview(tmp_path: Path) -> None:
    """No engine, or a stack that does not exist: no flag, so `up` previews as before."""
    assert first_up.up_flags("no-such-stack", tmp_path, {"PATH": str(tmp_path)}) == []
