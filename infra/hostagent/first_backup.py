#!/usr/bin/python3
"""pgp-first-backup: the pgBackRest stanza and first full backup of a dev Patroni cluster.

Without Patroni, dev's start script made them on the primary. With Patroni no container
is the primary for good, so every database container's entry script
(container_entry.sh) starts this in the background: it waits until this container's
Patroni leads (GET /primary answers 200), then, as postgres, runs `stanza-create` and a
full backup, each once, marked in the shared backup volume so the cluster does them
once whoever leads. A failure is retried; a node that stops leading waits again.

`python3 first_backup.py BUNDLE_FILE`: the settings are the bundle's
`patroni.first_backup` (config, stanza, marks); the REST API is patroni.yml's. Python 3
stdlib only, plus patroni_api beside it; it never prints a file's content.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:  # in the project (tests); in a container, the file beside this one
    from . import patroni_api
except ImportError:
    import patroni_api  # type: ignore[no-redef,import-not-found]

RETRY_SECONDS = 30.0
Run = Callable[[Sequence[str]], int]


def _run(cmd: Sequence[str]) -> int:
    return subprocess.run(list(cmd), check=False).returncode


def steps(spec: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(mark, command) in order: the stanza, then the first full backup."""
    base = ["runuser", "-u", spec.get("os_user", "postgres"), "--", "pgbackrest",
            f"--config={spec['config']}", f"--stanza={spec['stanza']}"]
    return [("stanza-created", [*base, "stanza-create"]),
            ("first-backup", [*base, "--type=full", "backup"])]


def once(ha: dict[str, Any], api: Any = patroni_api, run: Run = _run) -> bool:
    """One attempt; True once both steps are marked done."""
    spec, marks = ha["first_backup"], Path(ha["first_backup"]["marks"])
    todo = [(m, c) for m, c in steps(spec) if not (marks / m).exists()]
    if not todo:
        return True
    url = api.rest_url(api.load_config(ha["config"]))
    if api.get(url, "/primary", ha["ca_file"])[0] != 200:
        return False      # only the leader backs up (pgBackRest reads the primary)
    for mark, cmd in todo:
        if run(cmd) != 0:
            print(f"pgp-first-backup: {' '.join(cmd[4:6])} {cmd[-1]} failed; retrying",
                  file=sys.stderr, flush=True)
            return False
        marks.mkdir(parents=True, exist_ok=True)
        (marks / mark).touch()
        print(f"pgp-first-backup: {mark}", flush=True)
    return True


def main(argv: list[str] | None = None, *, sleep: Callable[[float], None] = time.sleep,
         attempts: int = -1) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: first_backup.py BUNDLE_FILE", file=sys.stderr)
        return 2
    ha = json.loads(Path(args[0]).read_text()).get("patroni") or {}
    if not ha.get("first_backup"):
        return 0
    while attempts != 0:
        try:
            if once(ha):
                return 0
        except (OSError, ValueError, KeyError) as exc:
            print(f"pgp-first-backup: {exc}", file=sys.stderr, flush=True)
        attempts -= 1
        sleep(RETRY_SECONDS)
    return 1


if __name__ == "__main__":
    sys.exit(main())
