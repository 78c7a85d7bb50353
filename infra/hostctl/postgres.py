"""Run PostgreSQL server processes on this machine.

Shared by the local backend's dynamic providers and by the integration-test
fixtures, so that tests start servers exactly the way `pulumi up` does.
Commands run as the ``postgres`` OS user when we are root (infra/hostctl/proc.py).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.files import chown_service, make_dir, write_file
from infra.hostctl.net import port_open
from infra.hostctl.proc import pid_from_file, run, wait_until

PG_VERSION = 15
INSTALL_ROOT = Path("/usr/lib/postgresql")


def bin_dir(version: int = PG_VERSION) -> Path:
    """Debian installs each major version's server binaries in its own folder."""
    return INSTALL_ROOT / str(version) / "bin"


def installed_versions(root: Path = INSTALL_ROOT) -> tuple[int, ...]:
    """The major versions whose server (`bin/postgres`) is installed on this machine."""
    found = [int(p.parent.parent.name) for p in root.glob("*/bin/postgres")
             if p.parent.parent.name.isdigit()]
    return tuple(sorted(found))


@dataclass(frozen=True)
class Server:
    """One PostgreSQL data directory and how to reach it."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    version: int = PG_VERSION

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
            run([str(bin_dir(self.version) / "initdb"), "-D", str(self.data_dir), "-U", superuser,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                 "--locale=C.UTF-8", "--data-checksums"],
                what=f"initdb of {self.data_dir}")

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """True when the postmaster of this data directory is alive."""
        return pid_from_file(self.data_dir / "postmaster.pid") is not None

    def start(self, timeout: float = 60.0, *, env: dict[str, str] | None = None,
              what: str = "starting PostgreSQL") -> None:
        """Start the postmaster (a no-op when it runs); `env` reaches its environment only."""
        if self.is_running():
            return
        make_dir(self.data_dir.parent, 0o755)
        if not self.log_file.exists():
            write_file(self.log_file, "", 0o600)
        run([str(bin_dir(self.version) / "pg_ctl"), "start", "-w", "-t", str(int(timeout)),
             "-D", str(self.data_dir), "-l", str(self.log_file)],
            what=f"{what} in {self.data_dir} (log: {self.log_file})",
            timeout=timeout + 10, env=env)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        if not self.is_running():
            return
        run([str(bin_dir(self.version) / "pg_ctl"), "stop", "-w", "-t", str(int(timeout)),
             "-m", mode, "-D", str(self.data_dir)],
            what=f"stopping PostgreSQL in {self.data_dir}", timeout=timeout + 10)

    def reload(self) -> None:
        run([str(bin_dir(self.version) / "pg_ctl"), "reload", "-D", str(self.data_dir)],
            what=f"reloading PostgreSQL in {self.data_dir}")

    def remove(self) -> None:
        """Stop the server and delete its data directory and log."""
        self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        if wait_until(lambda: port_open(self.host, self.port), timeout):
            return
        raise ProcessError(f"PostgreSQL on {self.host}:{self.port} did not accept "
                           f"connections within {timeout:.0f}s (log: {self.log_file})")

    def dsn(self, user: str, password: str, dbname: str = "postgres") -> str:
        """A libpq connection string (infra/dsn.py)."""
        return conninfo(host=self.host, port=self.port, user=user, password=password,
                        dbname=dbname)
