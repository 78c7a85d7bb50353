"""postgresql.conf and pg_hba.conf, checked by parsing what was rendered."""

from __future__ import annotations

import re

import pytest

from infra import config, render
from infra.errors import RenderError

PATHS = render.HostPaths(data_dir="/var/lib/postgresql/15/main", socket_dir="/run/pg")


def parse_conf(text: str) -> dict[str, str]:
    """key = value lines, as PostgreSQL reads them (comments and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key = value line: {line!r}"
        assert key.strip() not in out, f"{key.strip()} set twice"
        out[key.strip()] = value.strip()
    return out


def test_postgresql_conf_follows_the_settings() -> None:
    cfg = config.load({"replicas": 3, "postgres": {
        "port": 6000, "max_connections": 250, "shared_buffers": "1GB",
        "parameters": {"log_statement": "ddl", "search_path": "it's"}}}, "local")
    conf = parse_conf(render.postgresql_conf(cfg, PATHS, timescaledb=False))
    assert conf["port"] == "6000"
    assert conf["listen_addresses"] == "'127.0.0.1'"
    assert conf["max_connections"] == "250"
    assert conf["shared_buffers"] == "'1GB'"
    assert conf["password_encryption"] == "'scram-sha-256'"
    assert conf["unix_socket_directories"] == "'/run/pg'"
    # Fixed for the largest cluster, so adding a replica never restarts the primary.
    assert conf["max_wal_senders"] == str(cfg.max_wal_senders)
    assert int(conf["max_wal_senders"]) >= 5 + 1
    assert conf["log_statement"] == "'ddl'"
    assert conf["search_path"] == "'it''s'"
    assert conf["shared_preload_libraries"] == "'pg_stat_statements'"


def test_timescaledb_is_preloaded_only_when_present() -> None:
    cfg = config.load({}, "local")
    with_ts = parse_conf(render.postgresql_conf(cfg, PATHS, timescaledb=True))
    assert with_ts["shared_preload_libraries"] == "'pg_stat_statements,timescaledb'"


def test_port_override_is_for_replicas_on_one_host() -> None:
    cfg = config.load({"postgres": {"port": 6000}}, "local")
    conf = parse_conf(render.postgresql_conf(cfg, PATHS, timescaledb=False, port=6001))
    assert conf["port"] == "6001"


def test_rendering_is_stable_and_owned() -> None:
    cfg = config.load({}, "local")
    first = render.postgresql_conf(cfg, PATHS, timescaledb=False)
    assert first == render.postgresql_conf(cfg, PATHS, timescaledb=False)
    assert first.startswith("# Rendered by pg-platform from templates/postgresql.conf.j2.")
    assert render.pg_hba_conf(cfg).startswith("# Rendered by pg-platform from "
                                              "templates/pg_hba.conf.j2.")


def test_pg_hba_is_hostssl_scram_only_and_peer_for_break_glass_on_the_socket() -> None:
    cfg = config.load({"postgres": {"replication_role": "streamer"}}, "local")
    hba = render.pg_hba_conf(cfg, networks=("127.0.0.1/32", "10.0.0.0/16"))
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules, "no rules rendered"
    local_rules = [r for r in rules if r[0] == "local"]
    assert local_rules == [["local", "all", "postgres", "peer", "map=breakglass"]]
    network = [r for r in rules if r[0] != "local"]
    assert {r[0] for r in network} == {"hostssl"}  # no `host`: sslmode=disable is refused
    assert all(rule[-1] == "scram-sha-256" for rule in network)
    assert not re.search(r"\b(trust|md5|password|ident)\b", hba.split("METHOD", 1)[1])
    addresses = {rule[3] for rule in network}
    assert addresses == {"127.0.0.1/32", "10.0.0.0/16"}
    assert ["hostssl", "replication", "streamer", "10.0.0.0/16", "scram-sha-256"] in rules


def test_pg_ident_maps_only_the_given_os_users_to_break_glass() -> None:
    ident = render.pg_ident_conf("postgres", "root")
    rules = [line.split() for line in ident.splitlines() if line and not line.startswith("#")]
    assert rules == [["breakglass", "postgres", "postgres"], ["breakglass", "root", "postgres"]]


def test_pgquote_refuses_multiline_values() -> None:
    assert render.pgquote("a'b") == "'a''b'"
    with pytest.raises(RenderError, match="spans lines"):
        render.pgquote("a\nb")


def test_missing_template_variable_is_an_error() -> None:
    with pytest.raises(RenderError, match=r"templates/pg_hba\.conf\.j2"):
        render.render("pg_hba.conf.j2", networks=["127.0.0.1/32"])
