"""The dev container's loop (infra/hostagent/watch.py): when it runs the applier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.hostagent import watch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_applies_at_start_on_a_new_version_every_minute_and_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = tmp_path / "status.json"
    status.write_text('{"ok": true}')           # left by an earlier container
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"version": "v1", "report": {"file": str(status)}}))
    clock, runs = Clock(), []
    results = iter([True, True, False, True])

    def fake_apply(directory: Path, extra: list[str]) -> tuple[bool, str]:
        assert not status.exists()               # forgotten before the first run
        runs.append((clock.now, json.loads(bundle.read_text())["version"], extra))
        if len(runs) == 2:
            bundle.write_text(json.dumps({"version": "v2", "report": {}}))
        return next(results), "pgp-apply: primary: ..."

    monkeypatch.setattr(watch, "apply_once", fake_apply)
    watch.watch(tmp_path, ["--x"], clock=clock, sleep=clock.sleep, runs=4)
    times = [t for t, _, _ in runs]
    assert [v for _, v, _ in runs] == ["v1", "v1", "v2", "v2"]
    assert times[0] == 0 and times[1] == watch.EVERY_SECONDS     # unchanged: a minute
    assert times[2] - times[1] <= watch.POLL_SECONDS             # a new version: at once
    assert times[3] - times[2] == pytest.approx(watch.RETRY_SECONDS, abs=watch.POLL_SECONDS)
    assert all(extra == ["--x"] for _, _, extra in runs)


def test_a_missing_or_half_written_bundle_is_waited_for(tmp_path: Path) -> None:
    assert watch.version(tmp_path / "bundle.json") == ""
    (tmp_path / "bundle.json").write_text('{"vers')
    assert watch.version(tmp_path / "bundle.json") == ""


def test_stop_runs_each_services_stop_command(tmp_path: Path) -> None:
    marks = tmp_path / "stopped"
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"services": {
        "a.service": {"stop": ["bash", "-c", f"echo a >> {marks}"]},
        "b.service": {"stop": ["bash", "-c", f"echo b >> {marks}"], "start": ["false"]}}}))
    watch.stop_services(bundle)
    assert marks.read_text().split() == ["b", "a"]
