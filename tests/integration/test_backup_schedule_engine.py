"""Scheduled backups through the real engine: `pulumi up` starts the scheduler, a new incr
appears with no user action, `up` again leaves it alone, refresh + up bring a killed one
back, and destroy stops it and removes every restore directory of the stack."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from infra import config, hostctl
from infra.backends import local
from infra.backends.local_backup_scheduler import daemon
from infra.backends.local_layout import layout
from infra.backup import restore
from infra.hostctl.pgbackrest import PgBackRest
from infra.hostctl.proc import send
from tests import ports
from tests.engine import ThrowawayStack, stack_up

pytestmark = pytest.mark.engine

NEW_INCR_WITHIN = 180.0  # the acceptance bound: a new incr within 3 minutes


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    with stack_up("sched", {"postgres": {"port": ports.stack_port()},
                            "backup": {"schedule": {"incr": "* * * * *"}}}) as s:
        yield s


def _cfg(stack: ThrowawayStack) -> config.PlatformConfig:
    return config.load({"state_dir": str(stack.state_dir),
                        "backup": {"schedule": {"incr": "* * * * *"}}}, stack.name)


def _pgbr(stack: ThrowawayStack) -> PgBackRest:
    cfg = _cfg(stack)
    return PgBackRest(config=layout(cfg).pgbackrest_conf, stanza=cfg.backup.stanza)


def _scheduler_props(stack: ThrowawayStack) -> dict[str, Any]:
    return local.backup_scheduler_props(_cfg(stack))


def test_up_starts_a_scheduler_that_takes_an_incr_unasked(stack: ThrowawayStack) -> None:
    d = daemon(_scheduler_props(stack))
    assert d.running_pid() is not None, d.tail()

    def incr() -> bool:
        return any(b["type"] == "incr" for b in _pgbr(stack).info().get("backup", []))

    assert hostctl.wait_until(incr, NEW_INCR_WITHIN, 2.0), d.tail()
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def test_refresh_and_up_bring_a_killed_scheduler_back(stack: ThrowawayStack) -> None:
    d = daemon(_scheduler_props(stack))
    pid = d.running_pid()
    assert pid is not None
    send(pid, signal.SIGKILL)
    assert hostctl.wait_until(lambda: d.running_pid() is None, 10)
    stack.up("--refresh")
    assert d.running_pid() not in (None, pid), d.tail()


def test_destroy_stops_it_and_removes_every_restore(stack: ThrowawayStack) -> None:
    lay = layout(_cfg(stack))
    copy = restore.restore(_pgbr(stack), restore.new_workdir(lay.restores), target=None)
    assert copy.server.is_running()
    d = daemon(_scheduler_props(stack))
    stack.destroy()
    assert d.running_pid() is None
    assert not copy.server.is_running()
    assert not lay.restores.exists()
