"""Backends: the only code that knows how a host is made.

Each backend turns validated settings into running hosts and returns the same
`Endpoints`, so the SQL engine and the stack outputs do not care which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass
class Endpoints:
    """Where the platform answers; every DSN is a secret Output."""

    primary_dsn: pulumi.Output[str]
    app_dsn: pulumi.Output[str]
    replica_dsns: pulumi.Output[list[str]]
    pooler_dsn: pulumi.Output[str] | None = None
    # PgBouncer's admin console (SHOW POOLS, RELOAD…) as its admin user.
    pooler_admin_dsn: pulumi.Output[str] | None = None
    # Identity of the primary's data: when it changes, the SQL is applied again.
    primary_id: pulumi.Output[str] | None = None
    # The CA (PEM) that signed the servers' certificates, for clients' sslrootcert.
    ca_cert: pulumi.Output[str] | None = None
    # The hosts for the testinfra suite (docs/testing.md, tests/infra/inventory.py):
    # where they are, their paths, and the SHA-256 of each non-secret rendered file.
    testinfra_hosts: pulumi.Output[list[dict[str, Any]]] | None = None
    # Resources the SQL engine must wait for (the database and its roles).
    ready: list[pulumi.Resource] = field(default_factory=list)
