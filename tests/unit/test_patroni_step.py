"""pgp-apply's Patroni step against a scripted REST API: the leader's /config answers
502 for a moment after it bootstraps (seen on a loaded machine), which is a wait, not
a failure; a 502 that lasts is still one, naming the URL."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from infra.hostagent import patroni_api, patroni_step

WANTED = {"loop_wait": 5, "postgresql": {"parameters": {"work_mem": "4MB"}}}


def scripted(answers: list[int]) -> Any:
    """An api module whose GET /config gives `answers` in turn, then 200 with WANTED."""
    calls: list[str] = []

    def get(_url: str, path: str, _ca: str) -> tuple[int, dict[str, Any] | None]:
        calls.append(path)
        status = answers.pop(0) if answers else 200
        return status, (WANTED if status == 200 else None)

    return SimpleNamespace(
        get=get, calls=calls, differs=patroni_api.differs,
        PatroniApiError=patroni_api.PatroniApiError,
        load_config=lambda _path: {"bootstrap": {"dcs": WANTED}, "scope": "s"})


SPEC = {"config": "/etc/pg-platform/patroni.yml", "ca_file": "/ca", "members": []}


def test_a_brief_502_on_config_is_waited_for() -> None:
    api = scripted([502, 502, 502])
    slept: list[float] = []
    assert patroni_step.converge_dcs(api, SPEC, "https://n:8008", slept.append) == []
    assert api.calls == ["/config"] * 4 and len(slept) == 3


def test_a_lasting_502_fails_naming_the_node() -> None:
    api = scripted([502] * 1000)
    with pytest.raises(patroni_api.PatroniApiError, match=r"https://n:8008: HTTP 502 after 60 s"):
        patroni_step.converge_dcs(api, SPEC, "https://n:8008", lambda _s: None)


def test_another_error_fails_at_once() -> None:
    api = scripted([503])
    with pytest.raises(patroni_api.PatroniApiError, match=r"HTTP 503$"):
        patroni_step.converge_dcs(api, SPEC, "https://n:8008", lambda _s: None)
    assert api.calls == ["/config"]
