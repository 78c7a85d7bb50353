"""Files and directories a host's servers read: owned by the service user, written atomically."""

from __future__ import annotations

import os
import pwd
import threading
from pathlib import Path

from infra.hostctl.proc import SERVICE_USER, as_service_user


def service_ids() -> tuple[int, int]:
    ent = pwd.getpwnam(SERVICE_USER)
    return ent.pw_uid, ent.pw_gid


def chown_service(path: Path, recursive: bool = False) -> None:
    """Give a path to the service user (a no-op when not root)."""
    if not as_service_user():
        return
    uid, gid = service_ids()
    paths = [path]
    if recursive and path.is_dir():
        paths.extend(path.rglob("*"))
    for p in paths:
        os.chown(p, uid, gid, follow_symlinks=False)


def make_dir(path: Path, mode: int = 0o700) -> Path:
    """Create a directory the service user owns, with its parents traversable."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_service(path)
    return path


def write_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file atomically, readable by the service user only.

    The temporary name is the writer's own (process and thread): a provider's threads
    may write one file at once (every Patroni member writes the shared pgbackrest.conf
    before its first start), and with one shared name a writer renamed another's half
    of it away ("No such file or directory: .pgbackrest.conf.tmp")."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    chown_service(tmp)
    os.replace(tmp, path)


def write_tls(*, ca_file: str, ca_cert: str, cert_file: str, server_cert: str,
              key_file: str, server_key: str) -> None:
    """The CA, the server certificate and its key (0600, PostgreSQL refuses a wider one)."""
    for name in (ca_file, cert_file, key_file):
        make_dir(Path(name).parent, 0o755)
    write_file(Path(ca_file), ca_cert, 0o644)
    write_file(Path(cert_file), server_cert, 0o644)
    write_file(Path(key_file), server_key, 0o600)


def remove(*paths: str) -> None:
    for name in paths:
        Path(name).unlink(missing_ok=True)
