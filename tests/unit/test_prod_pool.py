"""prod with `ha.manager: patroni`, under Pulumi mocks: the pool and the backups outlive a host.

Every host runs HAProxy and PgBouncer (its own auth file, the same pgbouncer.ini)
and the scheduled backups under the leader guard; `pooler_dsn` and the admin DSN
list every host's PgBouncer, each host's certificate names the address clients
dial it at, the security group admits clients to every host's PgBouncer, no
secret reaches user-data or a plain output, and a pool-size change only rewrites
pgbouncer.ini in place. tests/integration/test_prod_pool_failover.py proves the libpq
and guard halves with real processes.
"""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.backends import aws_dsns
from infra.backends import aws_userdata as ud
from infra.config.aws import HA_PACKAGES
from infra.hostagent import leader_only
from tests.unit import cloud_mocks as cm
from tests.unit.test_aws_backend import RAW as PROD_PLAIN
from tests.unit.test_aws_backend import ips
from tests.unit.test_day2_in_place import INSTANCE, REPLACING, _bundles, _by_name
from tests.unit.test_ha_dev_prod import NODES, prod_raw, user_data

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ENI = "aws:ec2/networkInterface:NetworkInterface"
UNITS = "/etc/systemd/system"
POOLED = (ud.POOLER_INI, ud.AUTH_FILE, "/etc/haproxy/haproxy.cfg", ud.LEADER_GUARD,
          f"{UNITS}/pg-platform-backup-full.service", f"{UNITS}/pg-platform-backup-incr.timer")


@pytest.fixture(scope="module")
def run() -> cm.Run:
    return cm.run(prod_raw(), "prod")


def files(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in bundle["files"]}


def dsn_hosts(text: str) -> list[str]:
    return str(conninfo_to_dict(text)["host"]).split(",")


def test_every_host_runs_a_pooler_haproxy_and_the_guarded_backups(run: cm.Run) -> None:
    bundles = _bundles(run)
    inis = set()
    for name in NODES:
        f, enable = files(bundles[name]), bundles[name]["enable"]
        assert set(POOLED) <= set(f), (name, sorted(set(POOLED) - set(f)))
        inis.add(f[ud.POOLER_INI]["content"])
        assert f[ud.AUTH_FILE]["mode"] == "0600" and "SCRAM-SHA-256$" in \
            f[ud.AUTH_FILE]["content"]
        assert f[ud.LEADER_GUARD]["content"] == ud.LEADER_GUARD_SOURCE.read_text()
        for unit in ("haproxy.service", "pgbouncer.service", "pg-platform-backup-incr.timer"):
            assert unit in enable, (name, enable)
        assert enable.index("haproxy.service") < enable.index("pgbouncer.service")
        # The server certificate is PgBouncer's too: a new one reloads it on every host.
        assert "reload:pgbouncer.service" in f[ud.TLS.cert_file]["then"], name
        service = f[f"{UNITS}/pg-platform-backup-full.service"]["content"]
        exec_start = next(line for line in service.splitlines()
                          if line.startswith("ExecStart="))
        assert exec_start == (
            f"ExecStart=/usr/bin/python3 {ud.LEADER_GUARD} /etc/pg-platform/patroni.yml "
            f"{ud.TLS.ca_file} -- /usr/bin/pgbackrest --config={ud.PGBACKREST_CONF} "
            "--stanza=main --type=full --start-fast backup"), exec_start
        assert "Requires=pg-platform-patroni.service" in service
    assert len(inis) == 1, "every host's PgBouncer has the same pgbouncer.ini"


@pytest.mark.parametrize("lead", [True, False, None])
def test_the_guard_runs_exactly_the_command_the_unit_names(
        run: cm.Run, monkeypatch: pytest.MonkeyPatch, lead: bool | None) -> None:
    """The unit's ExecStart, split as systemd does, is what leader_only.main parses: the
    leader execs pgBackRest's argv unchanged, a replica runs nothing and exits 0, no answer
    exits 2. (The decision itself is tested against real Patroni nodes.)"""
    service = files(_bundles(run)["replica-1"])[
        f"{UNITS}/pg-platform-backup-incr.service"]["content"]
    argv = shlex.split(next(line for line in service.splitlines()
                            if line.startswith("ExecStart=")).removeprefix("ExecStart="))
    assert argv[:2] == ["/usr/bin/python3", ud.LEADER_GUARD]
    seen: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(leader_only, "decide", lambda *_a: (lead, "replica-1 seen"))
    code = leader_only.main(argv[2:], execv=lambda path, args: seen.append((path, args)))
    backup = argv[argv.index("--") + 1:]
    assert backup[0] == "/usr/bin/pgbackrest" and backup[-1] == "backup"
    assert (code, seen) == {True: (0, [(backup[0], backup)]), False: (0, []),
                            None: (leader_only.NO_ANSWER, [])}[lead]


def test_the_guard_refuses_a_command_line_without_its_separator() -> None:
    assert leader_only.main(["/etc/pg-platform/patroni.yml", "/ca.crt", "--"]) == 64
    assert leader_only.main(["a", "b", "c", "d"]) == 64


def test_pooler_dsns_list_every_hosts_pgbouncer_with_verify_full(run: cm.Run) -> None:
    addresses = ips(run)
    for key in ("pooler_dsn", "pooler_admin_dsn"):
        d = conninfo_to_dict(run.outputs[key])
        assert dsn_hosts(run.outputs[key]) == addresses, (key, d["host"])
        assert d["port"] == "6432" and d["sslmode"] == "verify-full", d
        assert d.get("target_session_attrs", "any") == "any", d
        # Per host: a dead host's dropped SYNs cost this long, not the kernel's retries.
        assert d["connect_timeout"] == str(aws_dsns.POOLER_CONNECT_TIMEOUT), d
        assert run.outputs["secret"][key] is True, key
    # The read-only pool is the same DSN with the `<database>_ro` pool: multi-host too.
    assert dsn_hosts(make_conninfo(run.outputs["pooler_dsn"], dbname="platform_ro")) == addresses



def test_server_dsns_find_the_leader_wherever_it_is(run: cm.Run) -> None:
    """Any host may lead: the DSNs that dial PostgreSQL list every host and let libpq pick
    by role, so the schema step and clients reach a new leader after a failover."""
    addresses = ips(run)
    for key in ("primary_dsn", "app_dsn"):
        d = conninfo_to_dict(run.outputs[key])
        assert dsn_hosts(run.outputs[key]) == addresses, (key, d["host"])
        assert d["target_session_attrs"] == "read-write", (key, d)
        assert d["connect_timeout"] == str(aws_dsns.POOLER_CONNECT_TIMEOUT), (key, d)
        assert d["sslmode"] == "verify-full" and d["port"] == "5432", (key, d)
        assert run.outputs["secret"][key] is True, key
    (replicas,) = run.outputs["replica_dsns"]   # one DSN: a standby, the leader if none
    d = conninfo_to_dict(replicas)
    assert dsn_hosts(replicas) == addresses
    assert d["target_session_attrs"] == "prefer-standby", d


def test_each_hosts_certificate_names_the_address_clients_dial_it_at(run: cm.Run) -> None:
    """libpq checks host k's certificate against the k-th name of `host=a,b,c`."""
    dialled = dsn_hosts(run.outputs["pooler_dsn"])
    certs = {r.name.removesuffix("-tls"): r.get("hosts")
             for r in run.mocks.of_type(cm.HOST_CERT)}
    for name, address in zip(NODES, dialled, strict=True):
        assert certs[name][0] == address, (name, certs[name], address)
        # ...and no other host's address: one host's key cannot serve for another.
        assert not set(certs[name]) & (set(dialled) - {address}), (name, certs[name])


def test_clients_reach_pgbouncer_on_every_host(run: cm.Run) -> None:
    sg_id = "db-sg-id"
    rules = [r for r in run.mocks.of_type(INGRESS) if r.get("fromPort") == 6432]
    raw = prod_raw()["aws"]
    assert {r.get("cidrIpv4") for r in rules if r.get("cidrIpv4")} == set(raw["allowed_cidrs"])
    assert {r.get("referencedSecurityGroupId") for r in rules
            if r.get("referencedSecurityGroupId")} == set(raw["allowed_security_groups"])
    assert all(r.get("securityGroupId") == sg_id and r.get("toPort") == 6432 for r in rules)
    # The rules are on the one group every host's interface is in.
    enis = run.mocks.of_type(ENI)
    assert len(enis) == len(NODES)
    assert all(e.get("securityGroups") == [sg_id] for e in enis), [e.get("securityGroups")
                                                                  for e in enis]


def test_no_secret_reaches_user_data_or_a_plain_output(run: cm.Run) -> None:
    secrets = [r.outputs["value"] for r in run.mocks.of_type(cm.PASSWORD)]
    assert len(secrets) >= 8   # the roles', break-glass's and Patroni's REST password
    plain_outputs = json.dumps({k: run.outputs[k] for k in run.outputs["plain"]})
    assert "testinfra_hosts" in run.outputs["plain"]
    for name in NODES:
        text = user_data(run.mocks.one(INSTANCE, name))
        for pw in secrets:
            assert pw not in text, name
    for pw in secrets:
        assert pw not in plain_outputs
    # The inventory lists every host's pgbouncer.ini (the first host's under `pooler`, the
    # one the suite checks), never an auth file.
    by_name = {h["name"]: h for h in run.outputs["testinfra_hosts"]}
    assert set(by_name["pooler"]["files"]) == {ud.POOLER_INI}
    for name in NODES[1:]:
        assert ud.POOLER_INI in by_name[name]["files"], name
    assert not any(ud.AUTH_FILE in h["files"] for h in by_name.values())


def test_a_pool_size_change_rewrites_pgbouncer_ini_in_place_on_every_host(
        run: cm.Run) -> None:
    raw = copy.deepcopy(prod_raw())
    raw["pooler"] = {**raw.get("pooler", {}), "default_pool_size": 37}
    after = cm.run(raw, "prod")
    for typ, keys in REPLACING.items():
        old, new = _by_name(run, typ), _by_name(after, typ)
        assert set(old) == set(new), typ
        for name in old:
            for key in keys:
                assert old[name].get(key) == new[name].get(key), (typ, name, key)
    before, now = _bundles(run), _bundles(after)
    for name in NODES:
        assert user_data(run.mocks.one(INSTANCE, name)) == \
            user_data(after.mocks.one(INSTANCE, name)), name
        was, got = files(before[name]), files(now[name])
        changed = {p for p in got if was.get(p, {}).get("content") != got[p]["content"]}
        assert changed == {ud.POOLER_INI}, (name, changed)
        assert "default_pool_size = 37" in got[ud.POOLER_INI]["content"]
        assert got[ud.POOLER_INI]["then"] == ["reload:pgbouncer.service"]


def test_without_patroni_the_pool_stays_on_the_primary() -> None:
    run = cm.run(PROD_PLAIN, "prod")
    addresses = ips(run)
    single = conninfo_to_dict(run.outputs["pooler_dsn"])
    assert single["host"] == addresses[0] and "connect_timeout" not in single
    for name in NODES[1:]:
        f = files(_bundles(run)[name])
        assert not {ud.POOLER_INI, ud.AUTH_FILE, ud.LEADER_GUARD} & set(f), name
        assert not any(p.startswith(f"{UNITS}/pg-platform-backup-") for p in f), name
    primary = files(_bundles(run)["primary"])
    service = primary[f"{UNITS}/pg-platform-backup-full.service"]["content"]
    assert "ExecStart=/usr/bin/pgbackrest " in service and "leader" not in service


def test_the_prod_stack_file_runs_patroni_with_every_pin() -> None:
    raw = cm.stack_file("prod")
    assert raw["ha"]["manager"] == "patroni" and raw["ha"]["synchronous"] == "on"
    assert int(raw["replicas"]) >= 2
    pins = raw["aws"]["package_versions"]
    assert {p: pins.get(p) for p in HA_PACKAGES} == {
        "patroni": "3.0.2-1", "etcd-server": "3.4.23-4+b4", "haproxy": "2.6.12-1+deb12u4"}
    run = cm.run(raw, "prod")
    hosts = dsn_hosts(run.outputs["pooler_dsn"])
    assert len(hosts) == 1 + int(raw["replicas"]) == len(set(hosts))
