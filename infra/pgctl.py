"""Run PostgreSQL server processes on this machine.

Shared by the local backend's dynamic providers and by the integration-test
fixtures, so that tests start servers exactly the way `pulumi up` does.

PostgreSQL refuses to run as root: when euid is 0 every server command runs as
the ``postgres`` OS user (through ``runuser``) and the directories it writes
are handed to that user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ProcessError

logger = logging.getLogger(__name__)

SERVICE_USER = "postgres"
PG_VERSION = 15


def bin_dir(version: int = PG_VERSION) -> Path:
    """Debian installs each major version's server binaries in its own folder."""
    return Path(f"/usr/lib/postgresql/{version}/bin")


def as_service_user() -> bool:
    return os.geteuid() == 0


def service_cmd(argv: Sequence[str]) -> list[str]:
    """Wrap a command so it runs as the service user when we are root."""
    if as_service_user():
        return ["runuser", "-u", SERVICE_USER, "--", *argv]
    return list(argv)


def chown_service(path: Path, recursive: bool = False) -> None:
    """Give a path to the service user (a no-op when not root)."""
    if not as_service_user():
        return
    ent = pwd.getpwnam(SERVICE_USER)
    paths = [path]
    if recursive and path.is_dir():
        paths.extend(path.rglob("*"))
    for p in paths:
        os.chown(p, ent.pw_uid, ent.pw_gid, follow_symlinks=False)


def make_dir(path: Path, mode: int = 0o700) -> Path:
    """Create a directory the service user owns, with its parents traversable."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_service(path)
    return path


def write_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file atomically, readable by the service user only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    chown_service(tmp)
    os.replace(tmp, path)


def run(argv: Sequence[str], *, what: str, timeout: float = 120.0,
        env: dict[str, str] | None = None, input_text: str | None = None) -> str:
    """Run a command as the service user; raise ProcessError with its output."""
    cmd = service_cmd(argv)
    logger.debug("running %s", " ".join(cmd))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
        env={**os.environ, **(env or {})}, input=input_text, check=False,
    )
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise ProcessError(f"{what} failed (exit {proc.returncode}): {out}")
    return proc.stdout


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """True when nothing is bound to host:port, so a server may listen there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@dataclass(frozen=True)
class Server:
    """One PostgreSQL data directory and how to reach it."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def initdb(self, superuser: str, password: str) -> None:
        """Create the cluster with scram-sha-256 and a password for `superuser`."""
        make_dir(self.data_dir.parent, 0o755)
        with tempfile.TemporaryDirectory(prefix="pgp-pw-") as tmp:
            tmpdir = Path(tmp)
            tmpdir.chmod(0o700)
            chown_service(tmpdir)
            pwfile = tmpdir / "pw"
            write_file(pwfile, password + "\n")
            run([str(bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", superuser,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                 "--locale=C.UTF-8", "--data-checksums"],
                what=f"initdb of {self.data_dir}")

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """True when the postmaster of this data directory is alive."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def start(self, timeout: float = 60.0) -> None:
        if self.is_running():
            return
        make_dir(self.data_dir.parent, 0o755)
        if not self.log_file.exists():
            write_file(self.log_file, "", 0o600)
        run([str(bin_dir() / "pg_ctl"), "start", "-w", "-t", str(int(timeout)),
             "-D", str(self.data_dir), "-l", str(self.log_file)],
            what=f"starting PostgreSQL in {self.data_dir} (log: {self.log_file})",
            timeout=timeout + 10)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        if not self.is_running():
            return
        run([str(bin_dir() / "pg_ctl"), "stop", "-w", "-t", str(int(timeout)),
             "-m", mode, "-D", str(self.data_dir)],
            what=f"stopping PostgreSQL in {self.data_dir}", timeout=timeout + 10)

    def reload(self) -> None:
        run([str(bin_dir() / "pg_ctl"), "reload", "-D", str(self.data_dir)],
            what=f"reloading PostgreSQL in {self.data_dir}")

    def remove(self) -> None:
        """Stop the server and delete its data directory and log."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(self.host, self.port):
                return
            time.sleep(0.05)
        raise ProcessError(f"PostgreSQL on {self.host}:{self.port} did not accept "
                           f"connections within {timeout:.0f}s (log: {self.log_file})")

    def dsn(self, user: str, password: str, dbname: str = "postgres") -> str:
        """A libpq URI; the password is percent-encoded."""
        from urllib.parse import quote

        return (f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
                f"@{self.host}:{self.port}/{quote(dbname, safe='')}")
