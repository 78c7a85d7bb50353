"""Dynamic providers that run PostgreSQL as processes on this machine.

The provider classes are pickled by reference into the stack's state, and
destroy and refresh use them without running the program: this module must
import cleanly, keep its path, and create every client inside the methods.
Code changes do not trigger updates by themselves, so each resource carries
PROVIDER_VERSION as an input; bump it when behaviour changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pulumi
from psycopg import sql
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra import hostctl, roles, scram
from infra.backends import local_move, local_renames
from infra.data_loss import refuse_data_loss
from infra.errors import ProcessError
from infra.hostctl import drift
from infra.resource_types import keep_urn

logger = logging.getLogger(__name__)

PROVIDER_VERSION = "3"
# Inputs whose change means a new data directory; every other change is an update
# (a new data_dir is a move: local_move).
_REPLACE_KEYS = ("superuser",)


def _server(props: dict[str, Any]) -> hostctl.Server:
    return hostctl.Server(data_dir=Path(props["data_dir"]), port=int(props["port"]),
                          host=props["host"])


def _connect(props: dict[str, Any], dbname: str = "postgres") -> psycopg.Connection[Any]:
    dsn = _server(props).dsn(props["superuser"], props["superuser_password"], dbname)
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def _write_config(props: dict[str, Any]) -> None:
    server = _server(props)
    hostctl.make_dir(Path(props["socket_dir"]), 0o755)
    hostctl.write_file(server.data_dir / "postgresql.conf", props["postgresql_conf"])
    hostctl.write_file(server.data_dir / "pg_hba.conf", props["pg_hba_conf"])
    if props.get("pg_ident_conf"):
        hostctl.write_file(server.data_dir / "pg_ident.conf", props["pg_ident_conf"])


def server_drift(props: dict[str, Any]) -> list[str]:
    """Rendered files changed on disk and ALTER SYSTEM overrides (infra/hostctl/drift.py)."""
    data = Path(props["data_dir"])
    return drift.changed_files({
        str(data / "postgresql.conf"): props.get("postgresql_conf"),
        str(data / "pg_hba.conf"): props.get("pg_hba_conf"),
        str(data / "pg_ident.conf"): props.get("pg_ident_conf") or None,
    }) + drift.auto_conf_drift(data)


def _set_superuser_verifier(props: dict[str, Any]) -> None:
    """Replace initdb's randomly salted verifier by the deterministic one."""
    with _connect(props) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(props["superuser"]),
            sql.Literal(scram.verifier(props["superuser"], props["superuser_password"]))))


def apply_config(olds: dict[str, Any], news: dict[str, Any],
                 start: Callable[[hostctl.Server], None] | None = None) -> None:
    """After new config files: start, reload, or restart when a setting needs it."""
    server = _server(news)
    start = start or hostctl.Server.start
    if olds.get("port") != news.get("port") or olds.get("host") != news.get("host"):
        hostctl.Server(Path(olds["data_dir"]), int(olds["port"]), olds["host"]).stop()
    if not server.is_running():
        start(server)
        server.wait_ready()
        return
    server.reload()
    with _connect(news) as conn:
        row = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()
    if row and row[0]:
        logger.info("restarting %s: %s settings need a restart", server.data_dir, row[0])
        server.stop()
        start(server)
        server.wait_ready()


def _system_identifier(props: dict[str, Any]) -> str:
    """Set by initdb: a new cluster, even in the same directory, gets a new one."""
    with _connect(props) as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    return str(row[0]) if row else ""


class PostgresServerProvider(ResourceProvider):
    """A PostgreSQL data directory, its rendered config files and its postmaster."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        server = _server(props)
        if server.data_dir.exists() and any(server.data_dir.iterdir()):
            raise ProcessError(
                f"data_dir {server.data_dir} already exists and is not empty; pg-platform "
                "creates clusters only in new directories. Remove it, or set "
                "`pg-platform:state_dir` to another folder.")
        try:
            server.initdb(props["superuser"], props["superuser_password"])
            _write_config(props)
            server.start()
            server.wait_ready()
            _set_superuser_verifier(props)
            ident = _system_identifier(props)
        except Exception:
            # Nothing half-made stays behind: the next `up` starts from scratch.
            server.remove()
            raise
        return CreateResult(id_=str(server.data_dir),
                            outs={**props, "running": True, "system_identifier": ident,
                                  "drift": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh notices a server stopped or removed by hand, and drift in its files."""
        server = _server(props)
        if not server.exists():
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "running": server.is_running(),
                                         "drift": server_drift(props)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in _REPLACE_KEYS if olds.get(k) != news.get(k)]
        refuse_data_loss(replaces, olds, news, what=f"the cluster in {olds.get('data_dir')}",
                         keys={"superuser": "the primary's bootstrap superuser, which this "
                                            "pg-platform version changed"})
        if not replaces:
            local_move.refuse_occupied(olds.get("data_dir"), news.get("data_dir"),
                                       "the primary's data directory")
        changed = [k for k in news if k not in ("running", "system_identifier",
                                                 "allow_data_loss", "drift")
                   and olds.get(k) != news.get(k)]
        stopped = olds.get("running") is False
        return DiffResult(changes=bool(changed) or stopped or drift.drifted(olds),
                          replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if olds.get("data_dir") != news.get("data_dir"):  # a new state_dir: stop, move, start
            old = _server(olds)
            old.stop()
            local_move.move_dir(old.data_dir, Path(news["data_dir"]),
                                "the primary's data directory")
            local_move.move_file(old.log_file, _server(news).log_file)
        _write_config(news)  # also undoes hand edits that refresh found
        drift.clear_auto_conf(Path(news["data_dir"]))  # ALTER SYSTEM: reloaded just below
        apply_config(olds, news)
        if olds.get("superuser_password") != news.get("superuser_password"):
            _set_superuser_verifier(news)
        ident = olds.get("system_identifier") or _system_identifier(news)
        return UpdateResult(outs={**news, "running": True, "system_identifier": ident,
                                  "drift": []})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _server(props).remove()


class DatabaseProvider(ResourceProvider):
    """The platform database, owned by the owner role, and the app role that owns nothing."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        # With Patroni the first session goes through HAProxy moments after the leader was
        # elected, and a session cut then (a health check flapping) is not an error in the
        # bootstrap, which is idempotent: it is run again, three tries in all.
        for attempt in range(3):
            try:
                self._apply(props)
                break
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise
                logger.warning("database bootstrap: %s; trying again", exc)
                time.sleep(1.0)
        return CreateResult(id_=props["database"], outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A key missing from olds was added by a newer version: an update, not a new database.
        # The database and its owner are renamed in place (local_renames).
        replaces: list[str] = [k for k in ("app_role", "replication_role")
                    if k in olds and olds.get(k) != news.get(k)]
        refuse_data_loss(replaces, olds, news,
                         what=f"database {olds.get('database')!r} and every tenant in it",
                         keys={k: f"pg-platform:postgres.{k}"
                               for k in ("database", "app_role", "replication_role")})
        changed = [k for k in news if k != "allow_data_loss" and olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces,
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # A rename first, so the bootstrap step finds the database and owner it expects.
        local_renames.apply(lambda: _connect(news), olds, news)
        self._apply(news)
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if not _server(props).is_running():
            return  # the server goes with its data directory; nothing to drop
        with _connect(props) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(props["database"])))
            # Scratch databases the owner made (the restore drill's pgp_drill) would keep
            # it from being dropped; the cluster itself goes right after this.
            for (scratch,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datdba = "
                    "(SELECT oid FROM pg_roles WHERE rolname = %s)",
                    (props.get("owner_role") or "",)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(scratch)))
            names = [props[k] for k in ("app_role", "replication_role", "monitor_role",
                                        "tenant_admin_role", "pooler_auth_role", "owner_role")
                     if props.get(k) and props[k] != props["superuser"]]
            # The tenant roles and their group went with the database's objects.
            names += [str(r[0]) for r in conn.execute(
                "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
                "WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                (roles.TENANT_GROUP,))]
            names += [roles.TENANT_GROUP, roles.TENANT_ADMIN]
            for name in dict.fromkeys(names):
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                    (name,)).fetchone():
                    continue
                # Grants the bootstrap step made on the other databases (CONNECT on postgres).
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE postgres, template1 FROM {}").format(
                    sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))

    @staticmethod
    def _apply(props: dict[str, Any]) -> None:
        """Idempotent: creates what is missing and sets what drifted (infra/roles.py)."""
        passwords = {k: props[f"{k}_password"] for k in roles.PASSWORD_KEYS
                     if props.get(f"{k}_password")}
        names = {k: props[f"{k}_role"] for k in roles.PASSWORD_KEYS if props.get(f"{k}_role")}
        if "owner" not in passwords:  # provider version 2: the superuser owned the database
            passwords["owner"], names["owner"] = props["superuser_password"], props["superuser"]
        spec = roles.Bootstrap.of(props["database"], passwords, names)
        roles.run(lambda db: _server(props).dsn(props["superuser"],
                                                props["superuser_password"], db), spec)


class PostgresServer(Resource, module="local", name="Primary"):
    """A local PostgreSQL server; its superuser password is a secret."""

    system_identifier: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(PostgresServerProvider(), name,
                         {**props, "running": None, "system_identifier": None,
                          "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["superuser_password"]))


class PlatformDatabase(Resource, module="local", name="Database"):
    """The platform database and the app role."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(DatabaseProvider(), name,
                         {**props, "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["superuser_password", "app_password",
                                                "replication_password", "owner_password",
                                                "monitor_password", "tenant_admin_password",
                                                "pooler_auth_password"]))
