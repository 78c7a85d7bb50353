"""The local backend's dynamic providers, called directly against real servers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra import config, hostctl, render
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.errors import ConfigError, ProcessError
from tests import ports
from tests.support import write_tls


def server_props(base: Path, port: int, **postgres: Any) -> dict[str, Any]:
    cfg = config.load({"postgres": {"port": port, **postgres}}, "local")
    paths = render.HostPaths(data_dir=str(base / "primary"), socket_dir=str(base / "run"))
    return {
        "data_dir": paths.data_dir, "socket_dir": paths.socket_dir, "host": "127.0.0.1",
        "port": port, "superuser": "owner_t", "superuser_password": secrets.token_urlsafe(16),
        "postgresql_conf": render.postgresql_conf(cfg, paths, timescaledb=False,
                                                  tls=write_tls(base / "tls")),
        "pg_hba_conf": render.pg_hba_conf(cfg), "provider_version": "test",
    }


@pytest.fixture
def created(scratch: Path) -> Iterator[tuple[PostgresServerProvider, dict[str, Any]]]:
    base = scratch
    provider = PostgresServerProvider()
    props = server_props(base, ports.free_port())
    outs = provider.create(props).outs or {}
    try:
        yield provider, dict(outs)
    finally:
        provider.delete(props["data_dir"], outs)


def query(props: dict[str, Any], sql: str, user: str | None = None,
          password: str | None = None, dbname: str = "postgres") -> Any:
    server = hostctl.Server(Path(props["data_dir"]), props["port"])
    dsn = server.dsn(user or props["superuser"], password or props["superuser_password"], dbname)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def test_create_starts_a_server_that_takes_the_generated_password(created: Any) -> None:
    _, outs = created
    assert outs["running"] is True
    assert query(outs, "SELECT 1") == 1
    assert query(outs, "SHOW password_encryption") == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        query(outs, "SELECT 1", password="wrong")


def test_diff_is_empty_for_the_same_inputs_and_names_a_config_change(created: Any) -> None:
    provider, outs = created
    same = {k: v for k, v in outs.items() if k != "running"}
    assert provider.diff("id", outs, same).changes is False
    changed = {**same, "postgresql_conf": same["postgresql_conf"] + "work_mem = '8MB'\n"}
    diff = provider.diff("id", outs, changed)
    assert diff.changes is True and not diff.replaces
    moved = {**same, "data_dir": same["data_dir"] + "2"}
    assert not provider.diff("id", outs, moved).replaces  # a move (local_move), not a replace
    new_superuser = {**same, "superuser": "someone_else"}
    with pytest.raises(ConfigError, match="allow_data_loss"):
        provider.diff("id", outs, new_superuser)  # it would delete the cluster: refused
    allowed = {**new_superuser, "allow_data_loss": True}
    assert provider.diff("id", outs, allowed).replaces == ["superuser"]


def test_update_reloads_and_restarts_when_a_setting_needs_it(created: Any) -> None:
    provider, outs = created
    news = {**outs, "postgresql_conf": outs["postgresql_conf"]
            + "work_mem = '8MB'\nmax_connections = 120\n"}
    provider.update("id", outs, news)
    assert query(news, "SHOW work_mem") == "8MB"
    assert query(news, "SHOW max_connections") == "120"  # needs a restart, which happened


def test_refresh_notices_a_stopped_server_and_update_starts_it(created: Any) -> None:
    provider, outs = created
    hostctl.Server(Path(outs["data_dir"]), outs["port"]).stop()
    refreshed = dict(provider.read(outs["data_dir"], outs).outs)
    assert refreshed["running"] is False
    assert provider.diff("id", refreshed, outs).changes is True
    provider.update("id", refreshed, {**outs})
    assert query(outs, "SELECT 1") == 1


def test_create_refuses_a_data_dir_that_holds_something(scratch: Path) -> None:
    base = scratch
    props = server_props(base, ports.free_port())
    Path(props["data_dir"]).mkdir()
    (Path(props["data_dir"]) / "precious").write_text("keep me")
    with pytest.raises(ProcessError, match="already exists and is not empty"):
        PostgresServerProvider().create(props)
    assert (Path(props["data_dir"]) / "precious").read_text() == "keep me"


def test_failed_create_leaves_nothing_behind(scratch: Path) -> None:
    base = scratch
    props = server_props(base, ports.free_port())
    props["postgresql_conf"] += "shared_buffers = 'not a size'\n"
    with pytest.raises(ProcessError, match="starting PostgreSQL"):
        PostgresServerProvider().create(props)
    assert not Path(props["data_dir"]).exists()


def test_delete_stops_the_server_and_removes_its_data(scratch: Path) -> None:
    base = scratch
    provider = PostgresServerProvider()
    props = server_props(base, ports.free_port())
    outs = provider.create(props).outs or {}
    provider.delete(props["data_dir"], outs)
    assert not Path(props["data_dir"]).exists()
    assert not hostctl.port_open("127.0.0.1", props["port"])


def test_database_provider_makes_an_app_role_that_owns_nothing(created: Any) -> None:
    _, outs = created
    app_pw = secrets.token_urlsafe(16)
    db_props = {**{k: outs[k] for k in ("host", "port", "data_dir", "superuser",
                                        "superuser_password")},
                "database": "platform_t", "app_role": "app_t", "app_password": app_pw}
    provider = DatabaseProvider()
    provider.create(db_props)
    provider.create(db_props)  # idempotent: a retried create changes nothing
    flags = query(outs, "SELECT (rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, "
                        "rolreplication)::text FROM pg_roles WHERE rolname = 'app_t'")
    assert flags == "(f,f,f,f,f)"
    assert query(outs, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                       "WHERE datname = 'platform_t'") == "owner_t"
    assert query(outs, "SELECT current_user", user="app_t", password=app_pw,
                 dbname="platform_t") == "app_t"
    assert query(outs, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                       "WHERE rolname = 'app_t'") is True
    provider.delete("platform_t", db_props)
    assert query(outs, "SELECT count(*) FROM pg_roles WHERE rolname = 'app_t'") == 0
