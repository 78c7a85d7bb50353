"""`pg-platform:state_dir`: where a local stack keeps its servers' data.

Relative paths are taken from the repository and must stay inside its
`.state/` folder (no `..` escape); an absolute path must be a folder the user
running pg-platform owns (or may create in a folder they own), never `/`, a
system tree, the repository itself, or the engine's own `.state` entries.
Another stack's folder is refused by `infra.config.neighbours`, which reads the
other stack files.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path, PurePosixPath

from infra.config.section import key
from infra.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
# The engine's own entries under .state/ (Makefile, scripts/bootstrap).
ENGINE_ENTRIES = ("backend", "pulumi-home", "passphrase")
# Servers run as this OS user when pg-platform runs as root (infra/hostctl/proc.py).
SERVICE_USER = "postgres"
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib", "/var/log", "/var/run",
                "/var/spool", "/var/cache", "/var/mail", "/var/backups")


def default_state_dir(stack: str, root: Path = REPO_ROOT) -> Path:
    return root / ".state" / stack


def resolve(value: str, stack: str, root: Path = REPO_ROOT) -> Path:
    """The folder a state_dir value names (without following symlinks)."""
    if not value:
        return default_state_dir(stack, root)
    path = Path(value)
    return Path(os.path.normpath(path if path.is_absolute() else root / path))


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _owners() -> set[int]:
    """This user; as root also the service user, who owns the folders servers write."""
    uids = {os.geteuid()}
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    return uids


def _owner_ok(path: Path) -> bool:
    """The folder, or the nearest one that exists above it, belongs to this user."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    return probe.stat().st_uid in _owners()


def check_state_dir(value: object, stack: str, root: Path = REPO_ROOT) -> str:
    where = key("state_dir")
    if not isinstance(value, str):
        raise ConfigError(f"{where}={value!r}: expected a path string")
    if value == "":
        return value
    allowed = (f"a folder inside {root / '.state'} (relative to the repository), or an "
               "absolute path to a folder you own")
    if ".." in PurePosixPath(value).parts:
        raise ConfigError(f"{where}={value!r}: '..' is not allowed in the path; expected "
                          f"{allowed}")
    path = resolve(value, stack, root)
    state = root / ".state"
    if path in (Path("/"), Path("/tmp"), Path("/var/tmp"), Path("/home"), Path.home()):
        raise ConfigError(f"{where}={value!r}: refused, pg-platform would write into (and "
                          f"`make destroy` remove from) {path}; expected {allowed}")
    if any(_inside(path, Path(tree)) for tree in SYSTEM_TREES):
        raise ConfigError(f"{where}={value!r}: inside a system folder; expected {allowed}")
    if _inside(path, root) or _inside(root, path):
        if not _inside(path, state) or path == state:
            raise ConfigError(f"{where}={value!r}: inside the repository but not in its "
                              f".state/ folder; expected {allowed}")
        entry = path.relative_to(state).parts[0]
        if entry in ENGINE_ENTRIES:
            raise ConfigError(f"{where}={value!r}: .state/{entry} belongs to the Pulumi "
                              f"engine; expected {allowed}")
        return value
    if not Path(value).is_absolute():
        raise ConfigError(f"{where}={value!r}: expected {allowed}")
    if not _owner_ok(path):
        raise ConfigError(f"{where}={value!r}: {path} (or the folder it would be made in) "
                          f"is not owned by the user running pg-platform (uid "
                          f"{os.geteuid()}); expected {allowed}")
    return value
