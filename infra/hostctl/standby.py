"""Make and unmake streaming replicas of a PostgreSQL primary on this machine.

Shared by the local backend's dynamic provider and the integration tests. A
replica is a pg_basebackup of the primary taken through its own physical
replication slot, which the primary then keeps for it; removing the replica
drops the slot, or the primary would keep WAL for it forever.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg

from infra.dsn import conninfo
from infra.errors import ProcessError
from infra.hostctl.files import make_dir, write_file
from infra.hostctl.postgres import Server, bin_dir
from infra.hostctl.proc import run, wait_until
from infra.render.passfile import pgpass_line

logger = logging.getLogger(__name__)


def write_passfile(path: Path, host: str, port: int, user: str, password: str) -> None:
    """The replication password for a standby and pg_basebackup: 0600, the service user's."""
    make_dir(path.parent, 0o700)
    write_file(path, pgpass_line(host, port, user, password), 0o600)


def _auth_env(password: str | None, passfile: Path | None) -> dict[str, str]:
    """A passfile path where there is one, so no secret sits in /proc/<pid>/environ."""
    return {"PGPASSFILE": str(passfile)} if passfile else {"PGPASSWORD": password or ""}


def start(server: Server, password: str | None, timeout: float = 60.0,
          passfile: Path | None = None) -> None:
    """Start a standby; its WAL receiver's libpq reads the password from `passfile`
    (primary_conninfo names it too), or else from PGPASSWORD in its environment."""
    server.start(timeout, env=_auth_env(password, passfile), what="starting standby")


def drop_slot(primary_dsn: str, slot: str, timeout: float = 15.0) -> bool:
    """Drop a physical slot once no walsender holds it; True when one was dropped."""
    with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=10) as conn:
        def state() -> str:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()
            return "absent" if row is None else "active" if row[0] else "idle"

        found = wait_until(lambda: st if (st := state()) != "active" else None, timeout, 0.1)
        if found is None:
            raise ProcessError(f"replication slot {slot} is still active after "
                               f"{timeout:.0f}s; stop its replica first")
        if found == "absent":
            return False
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        logger.info("dropped replication slot %s", slot)
        return True


def reserve_slot(primary_dsn: str, slot: str, attempts: int = 5) -> None:
    """Create the replica's physical slot and make sure it survived a checkpoint.

    PostgreSQL 15 has a race between reserving a new slot's WAL and a checkpoint
    already in progress: that checkpoint computed what to keep before the slot
    existed, recycles the segment and then invalidates the slot ("exceeds
    max_slot_wal_keep_size"). The first full backup's and the other replicas'
    immediate checkpoints hit it on a cold `up`. A CHECKPOINT issued after the
    slot exists waits for the one in progress; a slot still valid afterwards is
    counted by every later checkpoint.
    """
    with psycopg.connect(primary_dsn, autocommit=True, connect_timeout=10) as conn:
        for _ in range(attempts):
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                         "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                         (slot, slot))
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT wal_status FROM pg_replication_slots "
                               "WHERE slot_name = %s", (slot,)).fetchone()
            if row is not None and row[0] in ("reserved", "extended"):
                return
            logger.info("replication slot %s was invalidated by a concurrent checkpoint "
                        "(wal_status %s); making it again", slot, row and row[0])
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    raise ProcessError(f"replication slot {slot} was invalidated {attempts} times in a row "
                       "by concurrent checkpoints")


def basebackup(replica: Server, *, primary_host: str, primary_port: int, user: str,
               password: str | None, slot: str, timeout: float = 600.0,
               passfile: Path | None = None) -> None:
    """Copy the primary into an empty data dir through the slot `reserve_slot` made."""
    if replica.data_dir.exists() and any(replica.data_dir.iterdir()):
        raise ProcessError(f"data_dir {replica.data_dir} already exists and is not empty; "
                           "a replica is made only in a new directory")
    make_dir(replica.data_dir.parent, 0o755)
    make_dir(replica.data_dir, 0o700)
    source = conninfo(host=primary_host, port=primary_port, user=user, application_name=slot)
    run([str(bin_dir(replica.version) / "pg_basebackup"), "-D", str(replica.data_dir),
         "-d", source, "-w", "-X", "stream", "-c", "fast", "-S", slot],
        what=f"pg_basebackup into {replica.data_dir}", timeout=timeout,
        env=_auth_env(password, passfile))


def make_standby(replica: Server, postgresql_conf: str, pg_hba_conf: str,
                 socket_dir: Path) -> None:
    """Give the copied data dir the replica's own config, and mark it a standby."""
    make_dir(socket_dir, 0o755)
    write_file(replica.data_dir / "postgresql.conf", postgresql_conf)
    write_file(replica.data_dir / "pg_hba.conf", pg_hba_conf)
    # pg_basebackup copied the primary's ALTER SYSTEM settings; the rendered file rules.
    write_file(replica.data_dir / "postgresql.auto.conf", "")
    write_file(replica.data_dir / "standby.signal", "")
    (replica.data_dir / "postmaster.opts").unlink(missing_ok=True)


def wait_streaming(replica_dsn: str, timeout: float = 60.0) -> None:
    """Wait until the replica's WAL receiver streams from the primary."""
    last: list[str | None] = [None]

    def streaming() -> bool:
        try:
            with psycopg.connect(replica_dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
                last[0] = row[0] if row else None
        except psycopg.OperationalError as exc:
            last[0] = str(exc).strip()
        return last[0] == "streaming"

    if not wait_until(streaming, timeout, 0.1):
        raise ProcessError(f"replica did not start streaming within {timeout:.0f}s "
                           f"(last status: {last[0]})")
