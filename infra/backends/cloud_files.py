"""What the dev and prod backends share around the rendered files: their
`testinfra_hosts` entries (the file texts are rendered by infra/render)."""

from __future__ import annotations

import hashlib
from typing import Any

SERVICE_USER = "postgres"   # PostgreSQL and PgBouncer run as this user on dev and prod


def inventory_entry(name: str, role: str, spec: str, files: dict[str, str], *,
                    service_user: str = SERVICE_USER, **paths: str) -> dict[str, Any]:
    """One host of the `testinfra_hosts` output (format in docs/testing.md).

    `files` must hold only non-secret texts, exactly as delivered: the output is
    plain, and even a digest of a password-bearing file would let anyone with the
    outputs test guesses against it offline.
    """
    return {"name": name, "role": role, "spec": spec, "service_user": service_user, **paths,
            "files": {path: hashlib.sha256(text.encode()).hexdigest()
                      for path, text in sorted(files.items())}}
