"""The fence's proof of death (infra/hostctl/fence_evidence.py) against real processes.

Stand-ins for a member's processes: `sleep` started with the member's patroni.yml in
its argv, with `-D <data dir>`, or with the data directory as its working directory
(what every PostgreSQL child inherits). Each test tries to make the scan call a live
process dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import hostctl
from infra.hostctl.fence_evidence import scan


@pytest.fixture
def member(scratch: Path) -> Iterator[tuple[str, str]]:
    """A data directory owned by the service user, as PostgreSQL's always is."""
    data = hostctl.make_dir(scratch / "pg-1", 0o700)
    hostctl.chown_service(data)
    yield str(scratch / "pg-1.yml"), str(data)


def _spawn(argv: list[str], cwd: str = "/") -> subprocess.Popen[bytes]:
    """As the service user when we are root, as the local stack's servers run."""
    user = hostctl.SERVICE_USER if hostctl.as_service_user() else None
    return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, user=user, group=user)


def _end(p: subprocess.Popen[bytes]) -> None:
    p.kill()
    p.wait(timeout=10)


def test_nothing_running_is_dead(member: tuple[str, str]) -> None:
    ev = scan(*member)
    assert ev.dead, ev.describe()


def test_a_process_naming_the_config_is_its_patroni(member: tuple[str, str]) -> None:
    config, data = member
    # `sleep` ignores a second argument it cannot parse only if it is a number: use the
    # shell to carry the path in argv instead.
    p = _spawn(["/bin/sh", "-c", "sleep 60", "patroni", config])
    try:
        ev = scan(config, data)
        assert ev.patroni == (p.pid,) and not ev.dead
    finally:
        _end(p)
    assert scan(config, data).dead  # reaped: gone


def test_a_postmaster_by_argv_and_an_orphan_by_its_working_directory(
        member: tuple[str, str]) -> None:
    config, data = member
    by_argv = _spawn(["/bin/sh", "-c", "sleep 60", "postgres", "-D", data])
    by_cwd = _spawn(["/bin/sleep", "60"], cwd=data)  # like a backend after its postmaster
    try:
        ev = scan(config, data)
        assert set(ev.postgres) == {by_argv.pid, by_cwd.pid}, ev.describe()
        _end(by_argv)
        ev = scan(config, data)
        assert ev.postgres == (by_cwd.pid,) and not ev.dead
    finally:
        _end(by_argv)
        _end(by_cwd)
    assert scan(config, data).dead


def test_a_stopped_process_is_alive(member: tuple[str, str]) -> None:
    config, data = member
    p = _spawn(["/bin/sleep", "60"], cwd=data)
    try:
        os.kill(p.pid, signal.SIGSTOP)
        ev = scan(config, data)
        assert ev.postgres == (p.pid,) and not ev.dead
        os.kill(p.pid, signal.SIGCONT)
    finally:
        _end(p)


def test_a_zombie_is_dead_and_a_stale_pid_file_is_ignored(member: tuple[str, str]) -> None:
    config, data = member
    p = _spawn(["/bin/sleep", "60"], cwd=data)
    Path(data, "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n")  # a live pid, not it
    os.kill(p.pid, signal.SIGKILL)
    try:
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        assert Path(f"/proc/{p.pid}").exists()
        ev = scan(config, data)
        assert ev.dead, ev.describe()
    finally:
        p.wait(timeout=10)


def test_a_data_dir_that_cannot_be_read_is_unknown(tmp_path: Path) -> None:
    """stat of the data directory failing for another reason than absence: never dead."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    target = blocked / "pg-1"
    target.mkdir()
    blocked.chmod(0)
    try:
        if os.geteuid() == 0:  # root passes any mode: a loop of symlinks fails for it too
            loop = tmp_path / "loop"
            loop.symlink_to(loop)
            path = str(loop)
        else:
            path = str(target)
        ev = scan(str(tmp_path / "pg-1.yml"), path)
        assert ev.unknown and not ev.dead, ev.describe()
    finally:
        blocked.chmod(0o700)
