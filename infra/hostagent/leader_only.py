"""Run a command only on the node Patroni says leads: the prod hosts' backup guard.

With `ha.manager: patroni` every prod host carries the scheduled-backup timers
(infra/render/backup_timers.py), because any host may lead and pgBackRest backs
up from the primary. Each timer's service runs

    python3 pgp_leader_only.py PATRONI_YML CA_FILE -- pgbackrest ... backup

which asks this node's own Patroni (`GET /primary` at the REST address in its
patroni.yml, TLS verified against the platform CA) and

- 200 (this node holds the leader key): replaces itself with the command, so the
  backup's exit status and output are the unit's;
- any other answer (503 on a replica, a paused or starting node): prints one line
  and exits 0, so a replica's timer neither backs up nor fails;
- no answer after a few tries: exits 2 naming the node's REST address. Without
  Patroni nobody can say who leads; guessing could back up a demoted node or
  stay silent while backups stop, so the unit fails and its alert names why.

GET endpoints need no password, so nothing secret is read or sent. Stdlib plus
PyYAML (Debian's patroni depends on python3-yaml); on a host it lives beside
patroni_api.py, which cloud-init writes with the applier.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

try:  # in the project (tests); on a host, the file beside this one
    from . import patroni_api
except ImportError:
    import patroni_api  # type: ignore[no-redef,import-not-found]

TRIES = 3
NO_ANSWER = 2   # the exit status when this node's Patroni does not answer


def usage() -> str:
    return "usage: pgp_leader_only.py PATRONI_YML CA_FILE -- COMMAND [ARG...]"


def decide(config_file: str, ca_file: str, sleep: Callable[[float], None] = time.sleep
           ) -> tuple[bool | None, str]:
    """(True: lead, False: do not, None: no answer) and what was seen, in one line."""
    doc = patroni_api.load_config(config_file)
    url = patroni_api.rest_url(doc)
    name = str(doc.get("name", "this node"))
    status, body = 0, None
    for attempt in range(TRIES):
        status, body = patroni_api.get(url, "/primary", ca_file, timeout=5.0)
        if status:
            break
        if attempt < TRIES - 1:
            sleep(2)
    if status == 200:
        return True, f"{name} leads"
    if status == 0:
        return None, (f"{name}: Patroni at {url} did not answer GET /primary "
                      f"({TRIES} tries); cannot tell whether this node leads")
    role = (body or {}).get("role", "unknown")
    return False, f"{name} is not the leader (Patroni /primary: HTTP {status}, role {role})"


def main(argv: Sequence[str], execv: Callable[[str, list[str]], object] = os.execv) -> int:
    args = list(argv)
    if len(args) < 4 or args[2] != "--":
        print(usage(), file=sys.stderr)
        return 64
    config_file, ca_file, command = args[0], args[1], args[3:]
    lead, seen = decide(config_file, ca_file)
    if lead is None:
        print(f"pgp-leader-only: {seen}", file=sys.stderr)
        return NO_ANSWER
    if not lead:
        print(f"pgp-leader-only: {seen}: skipped {os.path.basename(command[0])}")
        return 0
    sys.stdout.flush()
    execv(command[0], command)
    return 0  # only when execv is a test's stand-in


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
