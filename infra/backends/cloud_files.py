"""What the dev and prod backends share around the rendered files: the passwords as
secret Outputs, their DSNs and their `testinfra_hosts` entries.

The file texts themselves are rendered by infra/render (roles, passfile, pooler).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi

from infra.config import PlatformConfig
from infra.dsn import output as conninfo_output
from infra.passwords import Password
from infra.render.patroni import HaSecrets
from infra.render.roles import Passwords
from infra.roles import BREAK_GLASS

SERVICE_USER = "postgres"   # PostgreSQL and PgBouncer run as this user on dev and prod


class PasswordOutputs:
    """The generated passwords as secret Outputs, in the order Passwords takes them."""

    def __init__(self, owner: pulumi.Output[str], app: pulumi.Output[str],
                 replicator: pulumi.Output[str], pooler_admin: pulumi.Output[str]) -> None:
        self.owner, self.app, self.replicator, self.pooler_admin = (
            owner, app, replicator, pooler_admin)

    def all(self) -> pulumi.Output[Passwords]:
        """One secret Output with every password; used to render secret files."""
        return pulumi.Output.secret(pulumi.Output.all(
            self.owner, self.app, self.replicator, self.pooler_admin,
        ).apply(lambda pw: Passwords(*pw)))


def ha_secrets(cfg: PlatformConfig, child: pulumi.ResourceOptions,
               replicator: pulumi.Output[str]) -> pulumi.Output[HaSecrets] | None:
    """ha.manager patroni: break-glass (Patroni's superuser and pg_rewind user, a Password
    of its own) with the replication role's and the REST API's passwords; else None."""
    if cfg.ha.manager != "patroni":
        return None
    superuser = Password(f"{BREAK_GLASS}-password", opts=child).value
    rest = Password("patroni-restapi-password", opts=child).value
    return pulumi.Output.secret(pulumi.Output.all(superuser, replicator, rest).apply(
        lambda pw: HaSecrets(pw[0], pw[1], pw[2])))


def dsn(user: str, password: pulumi.Input[str], host: pulumi.Input[str], port: int,
        database: str) -> pulumi.Output[str]:
    """A secret conninfo string (infra/dsn.py)."""
    return conninfo_output(host=host, port=port, user=user, password=password, dbname=database)


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
