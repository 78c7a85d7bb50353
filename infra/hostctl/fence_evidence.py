"""Whether a local Patroni member's processes exist, read from /proc (never pid files).

After a kill -9 a pid file is stale and its pid may belong to anything a moment
later, so the fence (infra/hostctl/fence.py) scans every process instead:

- the member's Patroni: a process whose argv names the member's patroni.yml;
- its PostgreSQL: a process whose argv has `-D <data dir>` (or `--pgdata`), or whose
  working directory is the data directory. The postmaster chdirs there and every
  backend, walsender and auxiliary process it forks inherits it, so a backend
  orphaned by a killed postmaster still counts as alive until it exits.

A stopped (SIGSTOP, state T) or hung process exists and counts as alive: only
absence is proof. A zombie has exited and cannot run code, so it does not count.
Anything that cannot be read, for a process that could be the member's (owned by the
data directory's owner, the only user PostgreSQL runs as for it), makes the
evidence `unknown`, and the fence never acts on unknown evidence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Evidence:
    patroni: tuple[int, ...] = ()
    postgres: tuple[int, ...] = ()
    unknown: tuple[str, ...] = field(default=())

    @property
    def dead(self) -> bool:
        """Proven gone: nothing of the member exists and nothing was unreadable."""
        return not (self.patroni or self.postgres or self.unknown)

    def describe(self) -> str:
        if self.dead:
            return "no Patroni and no PostgreSQL process of it exists"
        parts = []
        if self.patroni:
            parts.append(f"Patroni pid {','.join(map(str, self.patroni))} exists")
        if self.postgres:
            shown = ",".join(map(str, self.postgres[:5]))
            parts.append(f"PostgreSQL pid {shown}{'…' if len(self.postgres) > 5 else ''} "
                         "exists")
        if self.unknown:
            parts.append("unreadable: " + "; ".join(self.unknown[:3]))
        return ", ".join(parts)


def _names_data_dir(argv: list[str], data_dirs: set[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("-D", "--pgdata") and i + 1 < len(argv) and argv[i + 1] in data_dirs:
            return True
        if (arg.startswith("-D") and arg[2:] in data_dirs) or (
                arg.startswith("--pgdata=") and arg.split("=", 1)[1] in data_dirs):
            return True
    return False


def scan(config_file: str, data_dir: str, proc: Path = PROC) -> Evidence:
    """Every process of the member `config_file` / `data_dir` names, right now."""
    configs = {config_file, os.path.realpath(config_file)}
    data_dirs = {data_dir.rstrip("/"), os.path.realpath(data_dir)}
    try:
        owner = os.stat(data_dir).st_uid
    except FileNotFoundError:
        owner = None  # no data directory: no PostgreSQL can run on it, any user's
    except OSError as exc:
        return Evidence(unknown=(f"{data_dir}: {exc.strerror}",))
    patroni: list[int] = []
    postgres: list[int] = []
    unknown: list[str] = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue  # exited; only its parent's wait is missing
            uid = entry.stat().st_uid
            argv = [a.decode(errors="replace")
                    for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone between the listing and the read
        except (OSError, IndexError) as exc:
            unknown.append(f"pid {pid}: {exc}")
            continue
        if any(a in configs for a in argv):
            patroni.append(pid)
            continue
        if _names_data_dir(argv, data_dirs):
            postgres.append(pid)
            continue
        if owner is None or uid != owner:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except (FileNotFoundError, ProcessLookupError):
            continue
        except OSError as exc:
            unknown.append(f"pid {pid} cwd: {exc.strerror}")
            continue
        if cwd.removesuffix(" (deleted)") in data_dirs:
            postgres.append(pid)
    return Evidence(tuple(patroni), tuple(postgres), tuple(unknown))
