"""`pulumi up` waits for every host's reported bundle version, and fails naming the host."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from infra.backends import converge
from infra.errors import ProcessError


class NoSuchKeyError(Exception):
    """What boto3 raises for a missing object (its class is named NoSuchKey)."""


NoSuchKeyError.__name__ = "NoSuchKey"


class Bucket:
    """An object store the hosts write to as time passes (one step per poll)."""

    def __init__(self, timeline: list[dict[str, dict[str, Any]]]) -> None:
        self.timeline, self.step = timeline, 0

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        now = self.timeline[min(self.step, len(self.timeline) - 1)]
        if Key not in now:
            raise NoSuchKeyError(Key)
        return {"Body": io.BytesIO(json.dumps(now[Key]).encode())}


class Clock:
    def __init__(self, bucket: Bucket) -> None:
        self.t, self.bucket = 0.0, bucket

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.bucket.step += 1


PROPS = {"stack": "prod", "bucket": "b", "region": "eu-west-1", "timeout_seconds": 60,
         "versions": {"primary": "v2", "replica-1": "v2"}}
P, R = converge.status_key("prod", "primary"), converge.status_key("prod", "replica-1")


def ok(version: str) -> dict[str, Any]:
    return {"version": version, "ok": True, "error": ""}


def wait(timeline: list[dict[str, dict[str, Any]]]) -> Clock:
    bucket = Bucket(timeline)
    clock = Clock(bucket)
    converge.wait_for_hosts(PROPS, client=bucket, sleep=clock.sleep, clock=clock.now)
    return clock


def test_waits_until_every_host_reports_the_new_version() -> None:
    clock = wait([{P: ok("v1"), R: ok("v1")}, {P: ok("v2")}, {P: ok("v2"), R: ok("v2")}])
    assert clock.t == 2 * converge.POLL_SECONDS


def test_a_host_that_failed_is_named_with_its_error() -> None:
    failed = {"version": "v2", "ok": False, "error": "psql exited 2: FATAL"}
    with pytest.raises(ProcessError, match=r"host replica-1 failed to apply .*FATAL"):
        wait([{P: ok("v2"), R: failed}])


def test_a_host_that_never_converges_is_named_after_the_timeout() -> None:
    with pytest.raises(ProcessError) as err:
        wait([{P: ok("v2"), R: ok("v1")}])
    assert "replica-1 (still on v1)" in str(err.value) and "primary" not in str(err.value)
    with pytest.raises(ProcessError, match="primary \\(no report yet\\)"):
        wait([{R: ok("v2")}])


def test_login_wait_names_the_host_and_the_route() -> None:
    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += s

    with pytest.raises(ProcessError) as err:
        converge.wait_for_login("host=127.0.0.1 port=1 user=platform_owner dbname=platform "
                                "sslmode=verify-full connect_timeout=1", 20, sleep=sleep,
                                clock=lambda: t[0])
    assert "127.0.0.1:1" in str(err.value) and "platform_owner" in str(err.value)
    assert "route" in str(err.value)


def test_a_setup_failure_is_waited_out_and_named_at_the_timeout() -> None:
    setup = {"version": "v2", "ok": False, "phase": "setup",
             "error": "pgp-setup line 80 exited 1"}
    clock = wait([{P: ok("v2"), R: setup}, {P: ok("v2"), R: ok("v2")}])
    assert clock.t == converge.POLL_SECONDS     # the unit retried and succeeded
    with pytest.raises(ProcessError, match=r"replica-1 \(setup failing: pgp-setup line 80"):
        wait([{P: ok("v2"), R: setup}])
