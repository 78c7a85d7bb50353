"""Point-in-time restore into a new data directory, started on a free port.

The restored server never touches the source: it gets its own port and socket
directory, and WAL archiving is switched off, so a promoted copy cannot push a
new timeline into the source's repository. It gets the hot-standby settings
the WAL it replays needs (infra/backup/hot_standby.py), so a target after a
max_connections increase on the primary is reached rather than paused at.

A restore that fails removes what it made: the copy is stopped and its
directory deleted before the error is raised. `remove_all` clears a stack's
restores folder (the local backend calls it on destroy).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from infra import hostctl
from infra.backup import hot_standby
from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.pgbackrest import PgBackRest
from infra.render.backup import restore_settings
from infra.roles import BREAK_GLASS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """A restored, running copy."""

    server: hostctl.Server
    workdir: Path
    target: str | None
    # The hot-standby settings it runs with; raised in place when its log asks for more.
    settings: dict[str, int] = field(default_factory=dict)
    # Where its log stood when it last started: older lines are about an earlier start.
    log_mark: list[int] = field(default_factory=lambda: [0])

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "run"

    def local_dsn(self, source_dsn: str) -> str:
        """The bootstrap superuser, through the copy's own socket directory (peer).

        The copy runs with the configuration of its backup, which may predate the
        source's TLS settings; a Unix socket needs none and never leaves the host.
        Its pg_hba.conf admits only the break-glass superuser there, by peer.
        """
        return _with(source_dsn, host=str(self.socket_dir), port=str(self.server.port),
                     sslmode="prefer", sslrootcert=None, user=BREAK_GLASS, password=None)

    def tcp_dsn(self, source_dsn: str) -> str:
        """How people reach the copy over TCP (TLS when its configuration has it)."""
        return _with(source_dsn, host=self.server.host, port=str(self.server.port),
                     sslmode="prefer", sslrootcert=None)

    def remove(self) -> None:
        self.server.remove()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _with(dsn: str, **changes: str | None) -> str:
    """A conninfo with some parameters replaced, and those set to None removed."""
    return conninfo(dsn, **changes)


def format_target(when: datetime) -> str:
    """A recovery_target_time PostgreSQL parses exactly: UTC, microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def new_workdir(parent: Path) -> Path:
    """restores/<UTC time>-<n>: a directory that did not exist before."""
    hostctl.make_dir(parent, 0o755)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = parent / f"{stamp}-{n}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        path.chmod(0o755)
        hostctl.chown_service(path)
        return path
    raise ProcessError(f"no free restore directory under {parent}")


def restore(pgbr: PgBackRest, workdir: Path, *, target: str | None,
            host: str = "127.0.0.1", port: int | None = None,
            primary_dsn: str | None = None) -> Restored:
    """Restore the stanza (to `target`, a timestamp, when given) and start the copy.

    `primary_dsn`, when given, is asked for the primary's current hot-standby
    settings. On any failure the copy is stopped and `workdir` removed.
    """
    data_dir = workdir / "data"
    port = port or hostctl.free_port(host)
    copy = Restored(server=hostctl.Server(data_dir=data_dir, port=port, host=host),
                    workdir=workdir, target=target)
    try:
        pgbr.restore(data_dir, target=target)
        socket_dir = hostctl.make_dir(workdir / "run", 0o755)
        copy.settings.update(hot_standby.merged(
            hot_standby.controldata(data_dir),
            hot_standby.current_settings(primary_dsn) if primary_dsn else {}))
        auto = data_dir / "postgresql.auto.conf"
        hostctl.write_file(auto, auto.read_text() + restore_settings(host, port, str(socket_dir))
                           + hot_standby.settings_text(copy.settings))
        _start(copy)
    except BaseException:
        copy.remove()
        raise
    return copy


def _start(copy: Restored, rounds: int = 5) -> None:
    """Start the copy; when it stops because the WAL needs higher settings, raise them
    (its log names each setting and value) and start it again."""
    for _ in range(rounds):
        offset = _log_size(copy.server)
        try:
            copy.server.start(timeout=600)
            copy.log_mark[0] = offset
            return
        except ProcessError:
            if not _raise_settings(copy, offset):
                raise ProcessError(f"the restored server in {copy.server.data_dir} did not "
                                   f"start; {_log_tail(copy.server)}") from None
    raise ProcessError(f"the restored server in {copy.server.data_dir} still lacked "
                       f"hot-standby settings after {rounds} restarts; {_log_tail(copy.server)}")


def _log_size(server: hostctl.Server) -> int:
    try:
        return server.log_file.stat().st_size
    except OSError:
        return 0


def _log_since(server: hostctl.Server, offset: int) -> str:
    try:
        with open(server.log_file, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _raise_settings(copy: Restored, offset: int) -> bool:
    """Append the settings the log (since `offset`) asks for; False when it asks for none."""
    raised = hot_standby.raised_by_log(_log_since(copy.server, offset), copy.settings)
    if not raised:
        return False
    logger.info("restored copy in %s needs higher settings for its WAL: %s; restarting it",
                copy.workdir, ", ".join(f"{k}={v}" for k, v in sorted(raised.items())))
    copy.settings.update(raised)
    auto = copy.server.data_dir / "postgresql.auto.conf"
    hostctl.write_file(auto, auto.read_text() + hot_standby.settings_text(copy.settings))
    return True


def wait_promoted(restored: Restored, dsn: str, timeout: float = 300.0) -> None:
    """Wait until recovery reached its target and the copy accepts writes.

    Recovery that paused on a parameter change the copy's settings cannot take
    is restarted with the settings its log asks for.
    """
    def promoted() -> bool:
        offset = restored.log_mark[0]
        if hot_standby.paused_for_parameters(_log_since(restored.server, offset)):
            if not _raise_settings(restored, offset):
                raise ProcessError(f"recovery of the restored server paused for settings "
                                   f"it cannot take; {_log_tail(restored.server)}")
            restored.server.stop(mode="fast")
            _start(restored)
            return False
        if not restored.server.is_running():
            raise ProcessError(f"the restored server stopped during recovery; "
                               f"{_log_tail(restored.server)}")
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.OperationalError:
            return False
        return bool(row and row[0] is False)

    if not hostctl.wait_until(promoted, timeout, 0.1):
        raise ProcessError(f"the restored server was still recovering after {timeout:.0f}s; "
                           f"{_log_tail(restored.server)}")


def remove_all(restores_dir: Path) -> None:
    """Stop every copy under a stack's restores folder and delete the folder."""
    if not restores_dir.is_dir():
        return
    for workdir in sorted(p for p in restores_dir.iterdir() if p.is_dir()):
        data_dir = workdir / "data"
        if data_dir.is_dir():
            hostctl.Server(data_dir=data_dir, port=0).stop(mode="immediate")
        shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(restores_dir, ignore_errors=True)


def _log_tail(server: hostctl.Server, lines: int = 6) -> str:
    try:
        tail = server.log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"log {server.log_file} unreadable"
    return f"log {server.log_file}: " + " | ".join(tail)
