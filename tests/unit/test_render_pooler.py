"""PgBouncer settings and rendering: parsed, never compared as whole strings."""

from __future__ import annotations

import configparser
import re

import pytest

from infra import config, render, scram
from infra.errors import ConfigError, RenderError

PATHS = render.PoolerPaths(auth_file="/etc/pgbouncer/userlist.txt", socket_dir="/run/pgb",
                           pid_file="/run/pgb/pgbouncer.pid", log_file="/var/log/pgb.log")


def parse(ini_text: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    ini.read_string(ini_text)
    return ini


def ini_for(settings: dict[str, object],
            replica_hosts: tuple[str, ...] = ()) -> configparser.ConfigParser:
    cfg = config.load(settings, "local")
    targets = render.PoolerTargets(listen_address="127.0.0.1", primary_host="10.0.0.5",
                                   primary_port=5432, replica_hosts=replica_hosts,
                                   replica_port=5432)
    return parse(render.pgbouncer_ini(cfg, PATHS, targets))


def test_settings_reach_the_ini() -> None:
    ini = ini_for({"pooler": {"port": 7000, "pool_mode": "session", "default_pool_size": 30,
                              "min_pool_size": 5, "reserve_pool_size": 3,
                              "max_client_conn": 2000, "server_idle_timeout": 60,
                              "server_lifetime": 900, "query_wait_timeout": 15}})
    pgb = ini["pgbouncer"]
    assert (pgb["listen_port"], pgb["pool_mode"], pgb["default_pool_size"]) == (
        "7000", "session", "30")
    assert (pgb["min_pool_size"], pgb["reserve_pool_size"], pgb["max_client_conn"]) == (
        "5", "3", "2000")
    assert (pgb["server_idle_timeout"], pgb["server_lifetime"], pgb["query_wait_timeout"]) == (
        "60", "900", "15")
    assert pgb["auth_type"] == "scram-sha-256"
    assert pgb["auth_file"] == PATHS.auth_file
    assert pgb["admin_users"] == "pgbouncer_admin"


def test_defaults_are_transaction_mode_and_port_beside_postgres() -> None:
    pgb = ini_for({"postgres": {"port": 55432}})["pgbouncer"]
    assert pgb["pool_mode"] == "transaction"
    assert pgb["listen_port"] == "56432"


def test_read_write_entry_always_read_only_entry_only_with_replicas() -> None:
    alone = ini_for({})["databases"]
    assert dict(alone) == {"platform": "host=10.0.0.5 port=5432 dbname=platform"}
    spread = ini_for({"replicas": 2}, ("10.0.1.1", "10.0.1.2"))
    assert spread["databases"]["platform_ro"] == (
        "host=10.0.1.1,10.0.1.2 port=5432 dbname=platform")
    assert spread["pgbouncer"]["server_round_robin"] == "1"


def test_userlist_holds_the_servers_own_verifiers() -> None:
    cfg = config.load({}, "local")
    text = render.userlist_txt(render.pooler_users(cfg, "app-secret", "admin-secret"))
    assert "app-secret" not in text and "admin-secret" not in text
    entries = dict(line.split(" ") for line in text.splitlines() if line.startswith('"'))
    assert entries['"app"'] == f'"{scram.verifier("app", "app-secret")}"'
    assert entries['"pgbouncer_admin"'] == f'"{scram.verifier("pgbouncer_admin", "admin-secret")}"'


def test_userlist_refuses_anything_but_a_verifier() -> None:
    with pytest.raises(RenderError, match="not a SCRAM-SHA-256 verifier"):
        render.userlist_txt({"app": "plaintext-password"})


def test_ini_values_cannot_smuggle_settings() -> None:
    with pytest.raises(RenderError, match=r"pgbouncer\.ini"):
        render.ini("/tmp/x\nadmin_users = evil")


def test_pool_that_cannot_fit_is_rejected_with_the_numbers() -> None:
    with pytest.raises(ConfigError) as err:
        config.load({"postgres": {"max_connections": 100},
                     "pooler": {"default_pool_size": 90, "reserve_pool_size": 5}}, "local")
    msg = str(err.value)
    assert "pg-platform:pooler.default_pool_size=90 + reserve_pool_size=5 = 95" in msg
    assert "max_connections=100" in msg and "superuser_reserved_connections=3" in msg
    assert "= 92" in msg


def test_max_db_connections_caps_the_pool_for_the_fit_check() -> None:
    cfg = config.load({"postgres": {"max_connections": 100},
                       "pooler": {"default_pool_size": 200, "max_db_connections": 50}},
                      "local")
    assert cfg.pooler.server_connections_per_pool == 50


@pytest.mark.parametrize(("pooler", "message"), [
    ({"pool_mode": "batch"}, "pooler.pool_mode='batch': allowed values are session"),
    ({"min_pool_size": 30, "default_pool_size": 20}, "pooler.min_pool_size=30 exceeds"),
    ({"admin_user": "app"}, "pooler.admin_user='app': the console user must differ"),
    ({"port": 80}, "pooler.port=80: allowed range is 1024 to 65535"),
    ({"poolmode": "session"}, "pooler.poolmode: unknown setting"),
])
def test_bad_pooler_settings_name_key_and_allowed(pooler: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load({"pooler": pooler}, "local")


def test_auth_user_and_auth_query_only_where_asked() -> None:
    """The local stack looks tenant roles up through pgbouncer_auth; dev/prod do not yet."""
    from infra.render.pooler_auth import AUTH_QUERY

    cfg = config.load({}, "local")
    targets = render.PoolerTargets(listen_address="127.0.0.1", primary_host="10.0.0.5",
                                   primary_port=5432)
    plain = parse(render.pgbouncer_ini(cfg, PATHS, targets))["pgbouncer"]
    assert "auth_user" not in plain and "auth_query" not in plain
    pgb = parse(render.pgbouncer_ini(cfg, PATHS, targets, auth_user="pgbouncer_auth"))["pgbouncer"]
    assert (pgb["auth_user"], pgb["auth_query"]) == ("pgbouncer_auth", AUTH_QUERY)
    assert pgb["auth_type"] == "scram-sha-256"


def test_the_auth_file_lists_no_tenant_and_one_password() -> None:
    from infra.backends import tenant_users

    cfg = config.load({"tenants": [{"slug": "acme", "name": "Acme"}]}, "local")
    text = tenant_users.auth_file(cfg, "app-pw", "admin-pw", "tadmin-pw", "auth-pw")
    entries = dict(re.findall(r'^"([^"]+)" "([^"]+)"$', text, re.MULTILINE))
    assert set(entries) == {"app", cfg.pooler.admin_user, "tenant_admin", "pgbouncer_auth"}
    assert entries["pgbouncer_auth"] == "auth-pw"
    assert all(v.startswith("SCRAM-SHA-256$") for k, v in entries.items()
               if k != "pgbouncer_auth")
    with pytest.raises(RenderError, match="pgbouncer_auth"):
        tenant_users.auth_file(cfg, "a", "b", "c", 'bad" pw')
