"""The `ha` section and the files rendered from it: patroni.yml, etcd, haproxy.cfg."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from infra import config, render, roles
from infra.errors import ConfigError
from infra.render import patroni as render_ha
from tests.unit.test_aws_backend import RAW as PROD_RAW

TLS = render.TlsFiles(cert_file="/s/tls/server.crt", key_file="/s/tls/server.key",
                      ca_file="/s/tls/ca.crt")


def _node(name: str = "pg-1", host: str = "127.0.0.2") -> render_ha.PatroniNode:
    return render_ha.PatroniNode(
        name=name, host=host, port=5432, restapi_port=8008,
        paths=render.HostPaths(f"/s/{name}", "/s/run", "/s/pgbackrest/pgbackrest.conf"),
        pgpass=f"/s/patroni/{name}.pgpass", config_dir=f"/s/{name}")


def _render(settings: Mapping[str, object]) -> dict[str, Any]:
    cfg = config.load(settings, "local")
    etcd = render_ha.etcd_members(["127.0.0.2", "127.0.0.3", "127.0.0.4"], 2379, 2380)
    text = render_ha.patroni_yml(cfg, _node(), etcd, render_ha.HaSecrets("su-pw", "re-pw",
                                                                         "api-pw"),
                                 timescaledb=False, tls=TLS)
    assert text.startswith("# Rendered by pg-platform")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def test_defaults_keep_the_hand_supervised_path() -> None:
    ha = config.load({}, "local").ha
    assert ha.manager == "none" and ha.synchronous == "off"
    assert (ha.ttl, ha.loop_wait, ha.retry_timeout) == (20, 5, 5)


@pytest.mark.parametrize(("value", "mode", "strict"), [
    ("off", False, False), ("on", True, False), ("strict", True, True),
    (True, True, False), (False, False, False)])
def test_synchronous_maps_to_patroni(value: object, mode: bool, strict: bool) -> None:
    dcs = _render({"ha": {"synchronous": value}})["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is mode and dcs["synchronous_mode_strict"] is strict


@pytest.mark.parametrize(("ha", "message"), [
    ({"ttl": 19}, "pg-platform:ha.ttl=19: allowed range is 20 to 3600"),
    ({"loop_wait": 10, "retry_timeout": 6},
     "pg-platform:ha.ttl=20: Patroni needs loop_wait + 2 * retry_timeout <= ttl"),
    ({"synchronous": "maybe"}, "pg-platform:ha.synchronous='maybe': allowed values are off, "
                               "on, strict"),
    ({"manager": "pacemaker"}, "pg-platform:ha.manager='pacemaker': allowed values are none, "
                               "patroni"),
    ({"retry_timeout": 0}, "pg-platform:ha.retry_timeout=0: allowed range is 1 to 3600"),
    ({"etcd_client_port": 2380}, "pg-platform:ha.etcd_peer_port=2380: must differ"),
    ({"ttl": 30, "loops": 1}, "pg-platform:ha.loops: unknown setting"),
    ({"ttl": 20, "loop_wait": 16, "retry_timeout": 2},
     "pg-platform:ha.loop_wait=16: Patroni's etcd lease can go 2 * loop_wait = 32 s "
     "unrenewed, which must stay below pg-platform:ha.ttl=20; use loop_wait <= 9"),
    ({"ttl": 20, "loop_wait": 10, "retry_timeout": 5},
     "pg-platform:ha.loop_wait=10: Patroni's etcd lease can go 2 * loop_wait = 20 s"),
])
def test_bad_ha_settings_name_key_value_and_what_is_allowed(ha: dict[str, object],
                                                            message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load({"ha": ha}, "local")
    assert str(exc.value).startswith(message)


def test_rule_boundaries_are_accepted() -> None:
    ha = config.load({"ha": {"ttl": 20, "loop_wait": 8, "retry_timeout": 6}}, "local").ha
    assert ha.loop_wait + 2 * ha.retry_timeout == ha.ttl
    ha = config.load({"ha": {"ttl": 20, "loop_wait": 9, "retry_timeout": 5}}, "local").ha
    assert 2 * ha.loop_wait == ha.ttl - 2


def test_parameters_are_the_postgresql_conf_ones_split_cluster_wide_and_node_local() -> None:
    settings = {"postgres": {"max_connections": 77, "parameters": {"jit": "off"}}}
    cfg = config.load(settings, "local")
    conf = render_ha.parse_conf(render.postgresql_conf(cfg, _node().paths, timescaledb=False,
                                                       tls=TLS))
    doc = _render(settings)
    dynamic = doc["bootstrap"]["dcs"]["postgresql"]["parameters"]
    local = doc["postgresql"]["parameters"]
    assert dynamic["max_connections"] == "77" and dynamic["jit"] == "off"
    assert dynamic["ssl"] == "on" and dynamic["password_encryption"] == "scram-sha-256"
    # Every postgresql.conf setting is in one of the two, except those Patroni sets itself.
    patroni_sets = {"port", "listen_addresses", "hot_standby"}
    assert set(conf) - patroni_sets == set(dynamic) | set(local)
    assert "--pg1-path=/s/pg-1" in local["archive_command"]
    assert doc["bootstrap"]["dcs"]["postgresql"]["use_pg_rewind"] is True
    assert doc["bootstrap"]["dcs"]["postgresql"]["use_slots"] is True


def test_replicas_come_from_pgbackrest_first_then_basebackup() -> None:
    pg = _render({})["postgresql"]
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert "--pg1-path=/s/pg-1" in pg["pgbackrest"]["command"]
    assert pg["pgbackrest"]["keep_data"] is True


def test_pg_hba_is_the_rendered_scram_only_one() -> None:
    doc = _render({})
    hba = doc["postgresql"]["pg_hba"]
    assert hba == render_ha.pg_hba_lines(render.pg_hba_conf(config.load({}, "local")))
    network = [line for line in hba if not line.startswith("local ")]
    assert network and all(line.startswith("hostssl ") and line.endswith("scram-sha-256")
                           for line in network)
    assert doc["postgresql"]["pg_ident"]


def test_secrets_only_where_patroni_reads_them() -> None:
    doc = _render({})
    text = yaml.safe_dump(doc)
    assert text.count("su-pw") == 2 and text.count("re-pw") == 1 and text.count("api-pw") == 1
    auth = doc["postgresql"]["authentication"]
    assert auth["replication"]["sslmode"] == "verify-full"


def test_patroni_logs_in_as_break_glass_and_replicates_as_the_replication_role() -> None:
    """The owner role is no superuser (issue #12): Patroni's superuser and its pg_rewind
    user are the break-glass role, replication is the replication-only role."""
    cfg = config.load({}, "local")
    auth = _render({})["postgresql"]["authentication"]
    assert auth["superuser"]["username"] == roles.BREAK_GLASS
    assert auth["rewind"]["username"] == roles.BREAK_GLASS
    assert auth["superuser"]["password"] == auth["rewind"]["password"] == "su-pw"
    assert auth["replication"]["username"] == cfg.postgres.replication_role
    assert cfg.postgres.owner_role not in {a["username"] for a in auth.values()}
    assert all(a["sslmode"] == "verify-full" for a in auth.values())


def test_the_socket_peer_map_names_the_given_os_users_only() -> None:
    cfg = config.load({}, "local")
    etcd = render_ha.etcd_members(["127.0.0.2"], 2379, 2380)
    doc = yaml.safe_load(render_ha.patroni_yml(
        cfg, _node(), etcd, render_ha.HaSecrets("a", "b", "c"), timescaledb=True, tls=TLS,
        ident_users=("postgres", "root")))
    ident = doc["postgresql"]["pg_ident"]
    assert ident == ["breakglass postgres postgres", "breakglass root postgres"]
    assert f"local all {roles.BREAK_GLASS} peer map=breakglass" in doc["postgresql"]["pg_hba"]
    # TimescaleDB is preloaded through the dynamic configuration, like every parameter.
    params = doc["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert "timescaledb" in params["shared_preload_libraries"]
    assert params["timescaledb.telemetry_level"] == "off"


def test_etcd_uses_v3_with_mutual_tls() -> None:
    cfg = config.load({}, "local")
    members = render_ha.etcd_members(["127.0.0.2", "127.0.0.3", "127.0.0.4"], 2379, 2380)
    doc = yaml.safe_load(render_ha.etcd_conf(cfg, members[1], members, "/s/etcd/2", TLS))
    assert doc["enable-v2"] is False and doc["enable-grpc-gateway"] is True
    assert doc["initial-cluster"].count("https://") == 3
    assert doc["client-transport-security"]["client-cert-auth"] is True
    assert doc["peer-transport-security"]["trusted-ca-file"] == TLS.ca_file
    assert _render({})["etcd3"]["protocol"] == "https"


def test_haproxy_routes_by_patroni_role() -> None:
    text = render_ha.haproxy_cfg([_node(), _node("pg-2", "127.0.0.3")],
                                 render_ha.ProxyTargets("127.0.0.1", 5000, "/s/run/h.sock"), TLS)
    assert "uri /primary" in text and "uri /replica" in text
    assert text.count("check-ssl verify required") == 4
    assert "on-marked-down shutdown-sessions" in text
    with pytest.raises(Exception, match="contains a space"):
        render_ha.haproxy_cfg([_node()], render_ha.ProxyTargets("127.0.0.1", 5000,
                                                                "/s/a b.sock"), TLS)


def test_pgbouncer_login_retry_takes_a_fraction_of_a_second() -> None:
    """After a failover PgBouncer's next login attempt waits server_login_retry; HA stacks
    want a fraction of a second, and the default still renders as before."""
    paths = render.PoolerPaths(auth_file="/s/userlist.txt", socket_dir="/s/run")
    targets = render.PoolerTargets(listen_address="127.0.0.1", primary_host="127.0.0.1",
                                   primary_port=5000, replica_hosts=(), replica_port=5001)
    for value, line in ((0.25, "server_login_retry = 0.25"), (None, "server_login_retry = 15")):
        pooler = {} if value is None else {"server_login_retry": value}
        cfg = config.load({"pooler": pooler}, "local")
        assert line in render.pgbouncer_ini(cfg, paths, targets, TLS).splitlines()
    with pytest.raises(ConfigError, match=r"pg-platform:pooler.server_login_retry=0.05: "
                                          r"allowed range is 0.1 to 3600"):
        config.load({"pooler": {"server_login_retry": 0.05}}, "local")


@pytest.mark.parametrize(("backend", "ha", "extra", "message"), [
    ("local", {"restapi_port": 5432}, {}, r"pg-platform:ha.restapi_port=5432: collides with "
                                          r"pg-platform:postgres.port=5432"),
    ("local", {"etcd_client_port": 5432}, {},
     r"pg-platform:ha.etcd_client_port=5432: collides with pg-platform:postgres.port"),
    ("local", {"haproxy_port": 6431}, {"pooler": {"port": 6432}},
     r"pg-platform:pooler.port=6432: collides with pg-platform:ha.haproxy_port \+ 1"),
    ("aws", {"etcd_peer_port": 8008}, {},
     r"pg-platform:ha.etcd_peer_port=8008: collides with pg-platform:ha.restapi_port"),
])
def test_ports_that_share_an_address_with_patroni_must_differ(
        backend: str, ha: dict[str, object], extra: dict[str, object], message: str) -> None:
    base: dict[str, Any] = dict(PROD_RAW) if backend == "aws" else {"replicas": 2}
    raw = {**base, "postgres": {"port": 5432}, **extra,
           "ha": {"manager": "patroni", **ha}}
    with pytest.raises(ConfigError, match=message):
        config.load(raw, "prod" if backend == "aws" else "test")
    # The same ports are fine without Patroni: nothing listens on them.
    config.load({**raw, "ha": {"manager": "none", **ha}}, "prod" if backend == "aws" else "test")


def test_haproxy_may_take_postgres_port_on_the_listen_address() -> None:
    """The integration suite's Patroni cluster does: nodes listen on 127.0.0.2+, HAProxy on
    the listen address, so a client's DSN stays the hand-supervised one."""
    cfg = config.load({"replicas": 1, "postgres": {"port": 5432},
                       "ha": {"manager": "patroni", "haproxy_port": 5432}}, "test")
    assert cfg.ha.haproxy_port == cfg.postgres.port


def test_a_store_already_holding_the_dynamic_config_needs_no_patch() -> None:
    """PatroniConfig skips its PATCH and one loop_wait when etcd already holds the settings
    (a first `up`: bootstrap.dcs seeded them); any differing or missing value is a PATCH."""
    from infra.hostagent.patroni_api import differs

    cfg = config.load({"ha": {"manager": "patroni"}}, "local")
    wanted = render_ha.dynamic_config(cfg, _node(), timescaledb=False, tls=TLS)
    seeded = yaml.safe_load(render_ha.patroni_yml(
        cfg, _node(), [], render_ha.HaSecrets("a", "b", "c"), timescaledb=False,
        tls=TLS))["bootstrap"]["dcs"]
    assert not differs(wanted, {**seeded, "check_timeline": False})  # extra: Patroni's
    params = wanted["postgresql"]["parameters"]
    changed = {**wanted, "postgresql": {**wanted["postgresql"], "parameters": {
        **params, "max_connections": "7"}}}
    assert differs(changed, seeded)
    assert differs(wanted, {k: v for k, v in seeded.items() if k != "ttl"})


def _stanza_node(conf: str | None) -> render_ha.PatroniNode:
    return render_ha.PatroniNode(
        name="pg-1", host="127.0.0.2", port=5432, restapi_port=8008,
        paths=render.HostPaths("/s/pg-1", "/s/run", conf), pgpass="/s/pg-1.pgpass",
        config_dir="/s/pg-1")


def _bootstrap(conf: str | None, at_bootstrap: bool) -> dict[str, object]:
    cfg = config.load({"backup": {"stanza": "main"}}, "local")
    text = render_ha.patroni_yml(
        cfg, _stanza_node(conf), render_ha.etcd_members(["127.0.0.2"], 2379, 2380),
        render_ha.HaSecrets("su-pw", "re-pw", "api-pw"), timescaledb=False,
        tls=render.TlsFiles("/s/c", "/s/k", "/s/ca"), stanza_at_bootstrap=at_bootstrap)
    doc: dict[str, object] = yaml.safe_load(text)["bootstrap"]
    return doc


def test_the_bootstrap_creates_the_stanza_the_archive_command_pushes_to() -> None:
    conf = "/s/pg backrest/pgbackrest.conf"  # a space: the quoting must hold
    boot = _bootstrap(conf, True)
    argv = shlex.split(str(boot["post_init"]))
    # Patroni appends a connection string, which becomes the shell's $0 and nothing else.
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    assert shlex.split(argv[2]) == ["exec", "pgbackrest", f"--config={conf}",
                                    "--stanza=main", "stanza-create"]


@pytest.mark.parametrize(("conf", "at_bootstrap"), [(None, True), ("/s/p.conf", False)])
def test_no_post_init_without_a_repository_or_unless_asked(conf: str | None,
                                                           at_bootstrap: bool) -> None:
    """dev and prod (infra/render/ha_hosts.py) do not ask for it; a node with no
    pgbackrest.conf archives nothing."""
    assert "post_init" not in _bootstrap(conf, at_bootstrap)
