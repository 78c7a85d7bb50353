"""A replica's drift: its slot dropped on the primary, and a hand-set postgresql.auto.conf.

The providers are called directly against real servers (a primary, its
database and one streaming replica), as `pulumi refresh` and `up` call them:
read() reports the missing slot and the override by name, diff() plans an
update, and update() reserves the slot again, empties postgresql.auto.conf and
brings the standby back to streaming.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra import config, hostctl
from infra.backends import local
from infra.backends.local_layout import layout, replicas
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.backends.local_replica import ReplicaProvider
from infra.hostctl import drift, standby
from tests import ports
from tests.support import scratch_dir, write_tls


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    base = scratch_dir("pgp-drift-")
    cfg = config.load({"state_dir": str(base / "state"), "replicas": 1,
                       "postgres": {"port": ports.stack_port()}}, "drift")
    pw = {k: secrets.token_urlsafe(16) for k in ("superuser", "owner", "app", "replication")}
    tls = write_tls(Path(layout(cfg).tls.ca_file).parent)
    made: list[tuple[Any, dict[str, Any]]] = []
    try:
        for provider, props in [
            (PostgresServerProvider(), local.primary_props(cfg, pw["superuser"], tls,
                                                           timescaledb=False)),
            (DatabaseProvider(), local.database_props(cfg, pw["superuser"], pw["app"],
                                                      pw["replication"], owner_pw=pw["owner"])),
            (ReplicaProvider(), local.replica_props(cfg, replicas(cfg)[0], pw["superuser"],
                                                    pw["replication"], tls, timescaledb=False)),
        ]:
            made.append((provider, dict(provider.create(props).outs or {})))
        yield made[0][1], made[2][1]
    finally:
        for provider, outs in reversed(made):
            provider.delete("", outs)


def _outs(result: Any) -> dict[str, Any]:
    return dict(result.outs or {})


def _show(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    return str(row[0]) if row else ""


def test_a_dropped_slot_and_an_override_are_read_and_repaired(
        pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    primary, replica = pair
    provider = ReplicaProvider()
    assert _outs(provider.read("id", replica))["drift"] == []
    server = hostctl.Server(Path(replica["data_dir"]), int(replica["port"]), replica["host"])
    primary_dsn = hostctl.Server(Path(primary["data_dir"]), int(primary["port"])).dsn(
        primary["superuser"], primary["superuser_password"])
    server.stop()
    assert standby.drop_slot(primary_dsn, replica["slot"])
    (server.data_dir / drift.AUTO_CONF).write_text(drift.AUTO_CONF_HEADER
                                                   + "work_mem = '99MB'\n")
    outs = _outs(provider.read("id", replica))
    assert outs["running"] is False
    assert f"replication slot {replica['slot']}: missing on the primary" in outs["drift"]
    assert any("overrides work_mem" in d for d in outs["drift"]), outs["drift"]
    assert not any("99MB" in d for d in outs["drift"])  # names only, never values
    news = {k: v for k, v in replica.items() if k not in ("running", "drift")}
    assert provider.diff("id", outs, news).changes
    repaired = _outs(provider.update("id", outs, news))
    assert repaired["drift"] == [] and _outs(provider.read("id", repaired))["drift"] == []
    own = server.dsn(replica["superuser"], replica["superuser_password"])
    standby.wait_streaming(own)
    assert _show(own, "work_mem") == "4MB"
