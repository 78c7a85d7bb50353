"""A new `state_dir` moves the data there: stop, move, start - never a new cluster.

Changing `pg-platform:state_dir` used to be a replace of the primary (a new,
empty cluster) and of the backup stanza (its repository deleted). Instead the
primary's data directory and the pgBackRest repository are moved, as they
are, to the new folder; every other piece (certificates, PgBouncer, replicas,
which are copies of the primary) is written or made anew there by its own
resource. A target that already holds files is refused in preview, naming the
key: nothing is ever moved over other data.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from infra.errors import ConfigError, ProcessError
from infra.hostctl import files

logger = logging.getLogger(__name__)

KEY = "pg-platform:state_dir"


def refuse_occupied(old: str | None, new: str | None, what: str) -> None:
    """In diff (so in preview): the new place must be free, or the move is refused."""
    if not old or not new or old == new:
        return
    target = Path(new)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{KEY}: moving {what} from {old} to {new} is refused: {new} "
                          "already holds files, which pg-platform never overwrites. Empty "
                          "or remove it, or choose another state_dir")


def move_dir(old: Path, new: Path, what: str) -> bool:
    """Move `old` to `new` (the caller has stopped what uses it); False if already moved."""
    if not old.exists():
        if new.exists():
            return False  # an interrupted run moved it already
        raise ProcessError(f"{KEY}: {what} is neither at {old} nor at {new}; restore it "
                           "from a backup, or set allow_data_loss to start afresh")
    refuse_occupied(str(old), str(new), what)
    files.make_dir(new.parent, 0o755)
    logger.info("moving %s from %s to %s", what, old, new)
    if new.is_dir():
        new.rmdir()  # empty (checked above): shutil.move would move into it
    shutil.move(str(old), str(new))
    return True


def move_file(old: Path, new: Path) -> None:
    if old.exists() and not new.exists():
        files.make_dir(new.parent, 0o755)
        shutil.move(str(old), str(new))
