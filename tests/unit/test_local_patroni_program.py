"""The local program with `ha.manager: patroni`, under Pulumi mocks: which resources
it makes, that patroni.yml stays a secret, and that clients only ever dial HAProxy
and PgBouncer (never a node, whose role changes)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml

from infra import config
from tests.unit import cloud_mocks as cm

RAW: dict[str, Any] = {"replicas": 2, "postgres": {"port": 55432},
                       "ha": {"manager": "patroni", "synchronous": "on"}}
DYN = "pulumi-python:dynamic/local:"


@pytest.fixture(scope="module")
def run() -> cm.Run:
    return cm.run(RAW, "hamock")


def test_typed_dynamic_resources_replace_hand_supervision(run: cm.Run) -> None:
    kinds = Counter(r.typ for r in run.mocks.resources)
    assert kinds[DYN + "EtcdCluster"] == 1
    assert kinds[DYN + "PatroniMember"] == 3
    assert kinds[DYN + "PatroniConfig"] == 1
    assert kinds[DYN + "HaProxy"] == 1
    # No hand-started server or replica: Patroni starts, creates and promotes them.
    names = {r.name for r in run.mocks.resources}
    assert not names & {"primary", "replica-1", "replica-2"}


def test_patroni_yml_is_secret_and_names_the_cluster(run: cm.Run) -> None:
    members = run.mocks.of_type(DYN + "PatroniMember")
    for m in members:
        assert cm.contains_secret(m.inputs["patroni_yml"])
        doc = yaml.safe_load(m.get("patroni_yml"))
        assert doc["name"] == m.name and doc["scope"] == "pg-platform-hamock"
        assert doc["bootstrap"]["dcs"]["synchronous_mode"] is True
        assert len(doc["etcd3"]["hosts"]) == 3
    assert sorted(m.get("host") for m in members) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_clients_dial_haproxy_and_pgbouncer_only(run: cm.Run) -> None:
    ha_port = 5000
    assert f" port={ha_port} " in run.outputs["primary_dsn"]
    assert f" port={ha_port + 1} " in run.outputs["replica_dsns"][0]
    assert f" port={config.load(RAW, 'hamock').pooler.port} " in run.outputs["pooler_dsn"]
    ini = run.mocks.one(DYN + "Pooler", "pooler").get("pgbouncer_ini")
    assert f"host=127.0.0.1 port={ha_port} " in ini
    assert f"port={ha_port + 1} " in ini
    assert all(run.outputs["secret"].values())


def test_the_certificate_names_every_address_dialled(run: cm.Run) -> None:
    certs = run.mocks.one("pulumi-python:dynamic/tls:Certificates", "tls")
    hosts = certs.get("hosts")
    assert {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"} <= set(hosts)
