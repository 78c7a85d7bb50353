"""prod with `ha.manager: patroni`, under Pulumi mocks: what runs Patroni and etcd.

Each host's bundle carries Patroni's unit (and etcd's on the first three) and the
`patroni` section pgp-apply converges instead of pg-platform-postgresql.service,
with etcd enabled before Patroni; every host's PgBouncer dials its own HAProxy on
loopback; user-data installs the pinned packages; and a parameter change reaches
patroni.yml in place, replacing no instance (tests/unit/test_day2_in_place.py's rule).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from infra.backends.host_bundle import ETCD_UNIT, PATRONI_UNIT, POSTGRES_UNIT
from infra.errors import ConfigError
from tests.unit import cloud_mocks as cm
from tests.unit.test_day2_in_place import INSTANCE, REPLACING, _bundles, _by_name
from tests.unit.test_ha_dev_prod import HA_PINS, NODES, prod_raw, user_data

CONF = "/etc/pg-platform"
UNITS = "/etc/systemd/system"


@pytest.fixture(scope="module")
def run() -> cm.Run:
    return cm.run(prod_raw(), "prod")


def files(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in bundle["files"]}


def test_every_host_runs_patroni_and_the_first_three_etcd(run: cm.Run) -> None:
    bundles = _bundles(run)
    for name in NODES:
        b, f = bundles[name], files(bundles[name])
        assert f"{UNITS}/{PATRONI_UNIT}" in f and f"{UNITS}/{ETCD_UNIT}" in f, name
        unit = f[f"{UNITS}/{PATRONI_UNIT}"]["content"]
        assert f"ExecStart=/usr/bin/patroni {CONF}/patroni.yml" in unit
        assert "User=postgres" in unit and "KillMode=process" in unit
        assert f"--config-file {CONF}/etcd.conf" in f[f"{UNITS}/{ETCD_UNIT}"]["content"]
        assert f[f"{CONF}/patroni.yml"]["then"] == [f"reload:{PATRONI_UNIT}"]
        assert f[f"{CONF}/etcd.conf"]["then"] == [f"restart:{ETCD_UNIT}"]
        assert b["patroni"] == {
            "unit": PATRONI_UNIT, "etcd_unit": ETCD_UNIT, "config": f"{CONF}/patroni.yml",
            "ca_file": f"{CONF}/tls/ca.crt",
            "members": [m for m in b["patroni"]["members"]]}
        assert len(b["patroni"]["members"]) == 3 and all(
            m.startswith("https://") and m.endswith(":8008") for m in b["patroni"]["members"])
        # etcd first, then Patroni, then (every host runs a pooler) HAProxy before PgBouncer.
        enable = b["enable"]
        assert enable[:3] == [ETCD_UNIT, PATRONI_UNIT, "haproxy.service"], (name, enable)
        assert enable.index("haproxy.service") < enable.index("pgbouncer.service")
        # Patroni writes postgresql.conf and pg_hba.conf; nothing restarts the old unit.
        assert f"{CONF}/postgresql.conf" not in f and f"{CONF}/pg_hba.conf" not in f
        assert not any(POSTGRES_UNIT in a for item in f.values() for a in item["then"])
        # Every host may lead: the roles SQL is in each (verifiers only), slots Patroni's.
        assert b["sql"] and "SCRAM-SHA-256$" in b["sql"] and b["slots"] == []
        assert f"{CONF}/pgbackrest.conf" in f, name


def test_a_fourth_host_runs_patroni_without_etcd() -> None:
    b = _bundles(cm.run({**prod_raw(), "replicas": 3}, "prod"))["replica-3"]
    assert b["patroni"]["etcd_unit"] == "" and b["enable"][0] == PATRONI_UNIT
    assert f"{UNITS}/{ETCD_UNIT}" not in files(b)


def test_every_pgbouncer_follows_the_leader_through_its_own_haproxy(run: cm.Run) -> None:
    for name in NODES:
        f = files(_bundles(run)[name])
        ini = f["/etc/pgbouncer/pgbouncer.ini"]["content"]
        assert "host=127.0.0.1 port=5000" in ini and "host=127.0.0.1 port=5001" in ini, ini
        cfg = f["/etc/haproxy/haproxy.cfg"]["content"]
        assert "bind 127.0.0.1:5000" in cfg and "uri /primary" in cfg and "uri /replica" in cfg
        assert cfg.count("check port 8008 check-ssl verify required") == 6
        assert f["/etc/haproxy/haproxy.cfg"]["then"] == ["reload:haproxy.service"]
    # PgBouncer verifies the server's name (verify-full): every node's certificate names
    # the loopback address it is dialled at through HAProxy.
    for cert in run.mocks.of_type("pulumi-python:dynamic/tls:HostCertificate"):
        assert "127.0.0.1" in cert.get("hosts"), cert.name


def test_user_data_installs_the_pinned_packages_and_the_applier_modules(run: cm.Run) -> None:
    for name in NODES:
        doc = yaml.safe_load(user_data(run.mocks.one(INSTANCE, name)))
        written = {f["path"]: f["content"] for f in doc["write_files"]}
        pins = written[f"{CONF}/packages"].split()
        for package, version in HA_PINS.items():
            assert f"{package}={version}" in pins, (name, pins)
        assert "/usr/local/lib/pg-platform/patroni_step.py" in written
        assert "/usr/local/lib/pg-platform/patroni_api.py" in written
        assert f"{UNITS}/{POSTGRES_UNIT}" not in written   # Patroni runs PostgreSQL
        setup = written["/usr/local/sbin/pgp-setup"]
        assert "systemctl mask etcd.service patroni.service" in setup
        # Patroni bootstraps the first node and makes the replicas, not the script.
        assert "/bin/initdb" not in setup and "as_pg pg_basebackup" not in setup


def test_without_a_pin_for_patroni_the_stack_is_refused() -> None:
    raw = prod_raw()
    del raw["aws"]["package_versions"]["etcd-server"]
    with pytest.raises(ConfigError, match="no version for etcd-server"):
        cm.run(raw, "prod")


def test_a_parameter_reaches_patroni_yml_and_replaces_no_instance(run: cm.Run) -> None:
    raw = copy.deepcopy(prod_raw())
    raw["postgres"]["parameters"] = {"random_page_cost": "1.1"}
    after = cm.run(raw, "prod")
    for typ, keys in REPLACING.items():
        old, new = _by_name(run, typ), _by_name(after, typ)
        assert set(old) == set(new), typ
        for name in old:
            for key in keys:
                assert old[name].get(key) == new[name].get(key), (typ, name, key)
    before_b, after_b = _bundles(run), _bundles(after)
    for name in NODES:
        assert user_data(run.mocks.one(INSTANCE, name)) == \
            user_data(after.mocks.one(INSTANCE, name)), name
        was, now = files(before_b[name]), files(after_b[name])
        changed = {p for p in now if was.get(p, {}).get("content") != now[p]["content"]}
        assert changed == {f"{CONF}/patroni.yml"}, (name, changed)
        dcs = yaml.safe_load(now[f"{CONF}/patroni.yml"]["content"])["bootstrap"]["dcs"]
        assert dcs["postgresql"]["parameters"]["random_page_cost"] == "1.1"
        assert json.dumps(before_b[name]["enable"]) == json.dumps(after_b[name]["enable"])
