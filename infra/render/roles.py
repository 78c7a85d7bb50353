"""The SQL that gives a new primary its roles and database (dev and prod hosts).

The docker and aws backends both start a primary from an empty data directory
and must give it the platform's roles with the same SCRAM verifiers the local
stack sets, so PgBouncer can pass SCRAM through. The text holds verifiers: the
backends call this inside `Output.apply`, so it stays a Pulumi secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from infra import scram
from infra.config import PlatformConfig
from infra.render.pooler import pooler_users, userlist_txt
from infra.render.template import render


@dataclass(frozen=True)
class Passwords:
    """The generated passwords, as plain strings inside an apply."""

    owner: str
    app: str
    replicator: str
    pooler_admin: str


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def bootstrap_sql(cfg: PlatformConfig, pw: Passwords) -> str:
    """SQL that gives a new primary its roles and database; holds verifiers, so secret."""
    pg = cfg.postgres
    names = {"owner": pg.owner_role, "app": pg.app_role, "replicator": pg.replication_role,
             "database": pg.database}
    ident = {k: _ident(v) for k, v in names.items()}
    ident.update({pg.app_role: ident["app"], pg.replication_role: ident["replicator"]})
    return render(
        "bootstrap.sql.j2", ident=ident, owner=pg.owner_role, app=pg.app_role,
        replicator=pg.replication_role, database=pg.database,
        owner_verifier=scram.verifier(pg.owner_role, pw.owner),
        app_verifier=scram.verifier(pg.app_role, pw.app),
        replicator_verifier=scram.verifier(pg.replication_role, pw.replicator))


def userlist(cfg: PlatformConfig, pw: Passwords) -> str:
    """PgBouncer's auth file, rendered by the shared renderer from the same passwords."""
    return userlist_txt(pooler_users(cfg, pw.app, pw.pooler_admin))
