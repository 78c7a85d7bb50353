"""Files the dev and prod backends ship to their hosts, beyond the shared renderings.

The docker and aws backends both start a primary from an empty data directory
and must give it the platform's roles with the same SCRAM verifiers the local
stack sets (so PgBouncer can pass SCRAM through). They share this module so
the two cannot drift. Everything here takes plain strings and is called inside
`Output.apply`, so the results stay Pulumi secrets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
from psycopg import sql

from infra import render, scram
from infra.config import PlatformConfig
from infra.errors import RenderError

SERVICE_USER = "postgres"   # PostgreSQL and PgBouncer run as this user on dev and prod


@dataclass(frozen=True)
class Passwords:
    """The generated passwords, as plain strings inside an apply."""

    owner: str
    app: str
    replicator: str
    pooler_admin: str


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


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def bootstrap_sql(cfg: PlatformConfig, pw: Passwords) -> str:
    """SQL that gives a new primary its roles and database; holds verifiers, so secret."""
    pg = cfg.postgres
    names = {"owner": pg.owner_role, "app": pg.app_role, "replicator": pg.replication_role,
             "database": pg.database}
    ident = {k: _ident(v) for k, v in names.items()}
    ident.update({pg.app_role: ident["app"], pg.replication_role: ident["replicator"]})
    return render.render(
        "bootstrap.sql.j2", ident=ident, owner=pg.owner_role, app=pg.app_role,
        replicator=pg.replication_role, database=pg.database,
        owner_verifier=scram.verifier(pg.owner_role, pw.owner),
        app_verifier=scram.verifier(pg.app_role, pw.app),
        replicator_verifier=scram.verifier(pg.replication_role, pw.replicator))


def _pgpass_field(value: str) -> str:
    if "\n" in value:
        raise RenderError("a passfile field cannot span lines")
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass(entries: list[tuple[str, str, str, str, str]]) -> str:
    """A libpq passfile: host:port:database:user:password lines, escaped as libpq reads them."""
    lines = [":".join(_pgpass_field(f) for f in entry) for entry in entries]
    return "\n".join(lines) + "\n"


def host_pgpass(cfg: PlatformConfig, pw: Passwords, primary_host: str, *,
                primary: bool) -> str:
    """The postgres OS user's passfile: on the primary the owner (pgBackRest connects as
    it), on a replica only the replicator, which is all streaming needs."""
    pg = cfg.postgres
    entries = [(primary_host, str(pg.port), "*", pg.replication_role, pw.replicator)]
    if primary:
        entries.insert(0, ("*", str(pg.port), "*", pg.owner_role, pw.owner))
    return pgpass(entries)


def userlist(cfg: PlatformConfig, pw: Passwords) -> str:
    """PgBouncer's auth file, rendered by the shared renderer from the same passwords."""
    return render.userlist_txt(render.pooler_users(cfg, pw.app, pw.pooler_admin))


def dsn(user: str, password: pulumi.Input[str], host: pulumi.Input[str], port: int,
        database: str) -> pulumi.Output[str]:
    """A secret libpq URI; passwords are URL-safe tokens, so they need no escaping."""
    return pulumi.Output.secret(pulumi.Output.format(
        "postgresql://{0}:{1}@{2}:{3}/{4}", user, password, host, port, database))


def inventory_entry(name: str, role: str, spec: str, files: dict[str, str],
                    **paths: str) -> dict[str, Any]:
    """One host of the `testinfra_hosts` output (format in docs/testing.md).

    `files` must hold only non-secret texts, exactly as delivered: the output is
    plain, and even a digest of a password-bearing file would let anyone with the
    outputs test guesses against it offline.
    """
    return {"name": name, "role": role, "spec": spec, "service_user": SERVICE_USER, **paths,
            "files": {path: hashlib.sha256(text.encode()).hexdigest()
                      for path, text in sorted(files.items())}}
