"""The local program with `ha.manager: patroni`, under Pulumi mocks: which resources
it makes, that patroni.yml stays a secret, and that clients only ever dial HAProxy
and PgBouncer (never a node, whose role changes)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import yaml

from infra import config, roles
from tests.timescale import ensure_installed
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


def test_patroni_superuser_is_break_glass_with_its_own_secret_password(run: cm.Run) -> None:
    """Security model (issue #12) on the Patroni path: break-glass is Patroni's superuser
    and pg_rewind user with the Password resource of its own; the owner is not."""
    passwords = {r.name: r.outputs["value"] for r in run.mocks.of_type(cm.PASSWORD)}
    cfg = config.load(RAW, "hamock")
    for m in run.mocks.of_type(DYN + "PatroniMember"):
        auth = yaml.safe_load(m.get("patroni_yml"))["postgresql"]["authentication"]
        assert auth["superuser"]["username"] == roles.BREAK_GLASS
        assert auth["superuser"]["password"] == passwords[f"{roles.BREAK_GLASS}-password"]
        assert auth["rewind"]["username"] == roles.BREAK_GLASS
        assert auth["replication"] == {
            "username": cfg.postgres.replication_role,
            "password": passwords[f"{cfg.postgres.replication_role}-password"],
            "sslmode": "verify-full", "sslrootcert": auth["replication"]["sslrootcert"]}
        assert passwords[f"{cfg.postgres.owner_role}-password"] not in m.get("patroni_yml")


def test_bootstrap_and_backups_use_the_security_model(run: cm.Run) -> None:
    cfg = config.load(RAW, "hamock")
    db = run.mocks.one(DYN + "Database", "database")
    assert db.get("superuser") == roles.BREAK_GLASS
    assert db.get("owner_role") == cfg.postgres.owner_role
    assert db.get("monitor_role") == roles.MONITOR
    assert db.get("tenant_admin_role") == roles.TENANT_ADMIN
    assert db.get("port") == cfg.ha.haproxy_port
    backup = run.mocks.one(DYN + "Backup", "backup")
    # pgBackRest logs in by peer on each node's socket: no password reaches it.
    assert backup.get("superuser") == roles.BREAK_GLASS and backup.get("superuser_password") \
        is None
    assert "pg3-socket-path=" in backup.get("pgbackrest_conf")


def test_timescaledb_job_runner_follows_the_leader_through_haproxy(run: cm.Run) -> None:
    """TimescaleDB is installed on this machine (the suite installs it when missing), so
    the Patroni path preloads it and runs the supervised job runner, dialling HAProxy."""
    ensure_installed()
    runner = run.mocks.one(DYN + "JobRunner", "timescaledb-job-runner")
    assert cm.contains_secret(runner.inputs["dsn"])
    assert " port=5000 " in runner.get("dsn")
    dcs = json.loads(run.mocks.one(DYN + "PatroniConfig", "patroni-config").get("dcs"))
    assert "timescaledb" in dcs["postgresql"]["parameters"]["shared_preload_libraries"]


def test_main_features_reach_the_patroni_path(run: cm.Run) -> None:
    """What the other branches added on the hand-supervised path: scheduled backups,
    tenants looked up through PgBouncer's auth_user, rotation of generated passwords."""
    assert len(run.mocks.of_type(DYN + "BackupScheduler")) == 1
    ini = run.mocks.one(DYN + "Pooler", "pooler").get("pgbouncer_ini")
    assert f"auth_user = {roles.POOLER_AUTH}" in ini
    userlist = run.mocks.one(DYN + "Pooler", "pooler").get("userlist")
    assert f'"{roles.POOLER_AUTH}"' in userlist
    database = run.mocks.one(DYN + "Database", "database")
    assert database.get("pooler_auth_role") == roles.POOLER_AUTH
    rotated = cm.run({**RAW, "rotation": 1}, "hamock")
    pg = config.load(RAW, "hamock").postgres

    def rotation(r: cm.Run, role: str) -> int:
        return int(r.mocks.one(cm.PASSWORD, f"{role}-password").get("rotation"))

    for role in (pg.app_role, pg.owner_role, pg.replication_role, roles.POOLER_AUTH):
        assert (rotation(run, role), rotation(rotated, role)) == (0, 1), role
    # Break-glass is Patroni's superuser: rotation leaves it (as on the other path).
    assert rotation(rotated, roles.BREAK_GLASS) == 0


def test_each_member_has_its_own_exporter_named_by_member(run: cm.Run) -> None:
    """Exporters follow their nodes: one per Patroni member, dialling that member's address
    (never HAProxy, whose target moves), labelled pg-N since the leader moves."""
    exporters = {r.name: r for r in run.mocks.of_type(DYN + "Exporter")}
    assert set(exporters) == {"postgres-exporter-pg-1", "postgres-exporter-pg-2",
                              "postgres-exporter-pg-3", "pgbouncer-exporter",
                              "pgbackrest-exporter"}
    for i in range(3):
        env = exporters[f"postgres-exporter-pg-{i + 1}"].get("env")
        assert env["DATA_SOURCE_URI"].startswith(f"127.0.0.{2 + i}:55432/")
        assert env["DATA_SOURCE_USER"] == roles.MONITOR
    # The shared query file is written once, by the first member's exporter.
    assert exporters["postgres-exporter-pg-1"].get("files")
    assert exporters["postgres-exporter-pg-2"].get("shared_files")


def test_only_the_first_member_may_bootstrap(run: cm.Run) -> None:
    """The others start beside it but only once it holds the initialize key (`join`), so a
    first `up` always makes pg-1 the leader that they clone."""
    members = {m.name: m for m in run.mocks.of_type(DYN + "PatroniMember")}
    assert not members["pg-1"].get("join")
    assert members["pg-2"].get("join") is True and members["pg-3"].get("join") is True


def test_testinfra_hosts_describe_what_runs(run: cm.Run) -> None:
    """One `node` per member (data dir and address; no role: the leader moves), the etcd
    members, HAProxy and PgBouncer, each hashing exactly what its resource writes, and
    no file that holds a password (patroni.yml, pgpass, the auth file)."""
    import hashlib

    from tests.infra.inventory import exported_inventory

    hosts = exported_inventory(run.outputs)
    assert [(h.name, h.role) for h in hosts] == [
        ("pg-1", "node"), ("pg-2", "node"), ("pg-3", "node"), ("etcd-1", "etcd"),
        ("etcd-2", "etcd"), ("etcd-3", "etcd"), ("haproxy", "proxy"), ("pooler", "pooler")]
    members = {m.name: m for m in run.mocks.of_type(DYN + "PatroniMember")}
    for i, node in enumerate(hosts[:3]):
        assert node.data_dir == members[node.name].get("data_dir")
        assert node.address == f"127.0.0.{2 + i}:55432"
    backup = run.mocks.one(DYN + "Backup", "backup")
    proxy = run.mocks.one(DYN + "HaProxy", "haproxy")
    pooler = run.mocks.one(DYN + "Pooler", "pooler")
    written = {backup.get("config_path"): backup.get("pgbackrest_conf"),
               backup.get("schedule_path"): backup.get("schedule"),
               proxy.get("config_file"): proxy.get("haproxy_cfg"),
               pooler.get("ini_path"): pooler.get("pgbouncer_ini"),
               **{f"{m['base']}/etcd.conf.yml": m["config"]
                  for m in run.mocks.one(DYN + "EtcdCluster", "etcd").get("members")}}
    listed = {path: digest for h in hosts for path, digest in h.files.items()}
    assert listed == {p: hashlib.sha256(t.encode()).hexdigest() for p, t in written.items()}
    assert all(h.files for h in hosts)
    secret = {pooler.get("auth_file"), *(m.get("config_file") for m in members.values())}
    assert len(secret) == 4 and not secret & set(listed)


def test_the_fence_watches_every_member_and_holds_no_secret(run: cm.Run) -> None:
    """One dead-leader fence (docs/ha.md "The fence") over the members Patroni runs: their
    patroni.yml paths and data dirs, Patroni's key prefix, the etcd members, no password."""
    fence = run.mocks.one(DYN + "Fence", "fence")
    members = {m.name: m for m in run.mocks.of_type(DYN + "PatroniMember")}
    assert fence.get("members") == {
        n: {"config_file": m.get("config_file"), "data_dir": m.get("data_dir")}
        for n, m in members.items()}
    assert fence.get("prefix") == "/pg-platform/pg-platform-hamock"
    assert len(fence.get("endpoints")) == 3
    text = json.dumps(fence.inputs, default=str)
    for r in run.mocks.of_type(cm.PASSWORD):
        assert r.outputs["value"] not in text


def test_the_hand_supervised_path_has_no_fence() -> None:
    plain = cm.run({"replicas": 1, "postgres": {"port": 55432}}, "nofence")
    assert plain.mocks.of_type(DYN + "Fence") == []
