"""The dev (Docker) program under Pulumi mocks: resources, security, and the files it ships."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from infra import config, render, scram
from infra import errors as config_errors
from infra.backends import docker as backend
from infra.backends import docker_delivery as delivery
from infra.backends import docker_files as dfiles
from infra.backends.local_layout import state_dir
from policy import validators
from tests.infra.inventory import exported_inventory
from tests.unit import cloud_mocks as cm

CONTAINER = "docker:index/container:Container"
BUNDLE = "pulumi-python:dynamic/docker:Bundle"
RAW: dict[str, Any] = {
    "replicas": 2,
    "postgres": {"port": 5432, "shared_buffers": "256MB"},
    "docker": {"image": "timescale/timescaledb-ha:pg15@sha256:" + "cd" * 32,
               "network_subnet": "172.28.16.0/24"},
}


@pytest.fixture(scope="module")
def dev() -> cm.Run:
    return cm.run(RAW, "dev")


@pytest.fixture(scope="module")
def cfg() -> config.PlatformConfig:
    return config.load(RAW, "dev")


def bundle_of(run: cm.Run, name: str) -> dict[str, Any]:
    """Container `name`'s bundle as its directory receives it."""
    loaded: dict[str, Any] = json.loads(cm.plain(run.mocks.one(BUNDLE, f"{name}-bundle")
                                                 .inputs["bundle"]))
    return loaded


def files_of(run: cm.Run, name: str) -> dict[str, str]:
    """path -> content of every file in container `name`'s bundle."""
    return {f["path"]: f["content"] for f in bundle_of(run, name)["files"]}


def test_resource_types_and_counts(dev: cm.Run) -> None:
    counts = Counter(r.typ for r in dev.mocks.resources)
    assert counts["docker:index/network:Network"] == 1
    assert counts["docker:index/remoteImage:RemoteImage"] == 1
    assert counts["docker:index/volume:Volume"] == 2 + 1 + 1      # replicas, primary, backup
    assert counts[CONTAINER] == 2 + 1 + 1                         # replicas, primary, pooler
    names = {r.name for r in dev.mocks.of_type(CONTAINER)}
    assert names == {"primary", "replica-1", "replica-2", "pooler"}


def test_image_and_pgdata_of_the_ha_image(dev: cm.Run) -> None:
    image = dev.mocks.of_type("docker:index/remoteImage:RemoteImage")[0]
    assert image.get("name") == RAW["docker"]["image"]
    primary = dev.mocks.one(CONTAINER, "primary")
    assert primary.get("image") == f"sha256:{RAW['docker']['image']}"
    assert "PGDATA=/home/postgres/pgdata/data" in primary.get("envs")
    mounts = {m["containerPath"]: (m.get("volumeName") or m["hostPath"], bool(m.get("readOnly")))
              for m in primary.get("volumes")}
    root = state_dir(config.load(RAW, "dev")) / "docker" / "primary"
    assert mounts == {"/home/postgres/pgdata": ("pgp-dev-primary", False),
                      "/home/postgres/pgdata/backup": ("pgp-dev-backup", False),
                      "/pg-platform/bundle": (str(root / "bundle"), True),
                      "/pg-platform/status": (str(root / "status"), False)}
    # Root runs the applier's loop under tini; the image's entrypoint never runs.
    for c in dev.mocks.of_type(CONTAINER):
        assert (c.get("user"), c.get("init"), c.get("entrypoints"), c.get("command")) == (
            "root", True, ["python3"], ["/pg-platform/bundle/watch.py", "/pg-platform/bundle"])
        assert not c.get("uploads"), c.name


def test_ports_on_loopback_healthchecks_and_policies(dev: cm.Run) -> None:
    published = {}
    for c in dev.mocks.of_type(CONTAINER):
        ports = c.get("ports")
        assert ports and all(p["ip"] == "127.0.0.1" for p in ports), c.name
        tests = c.get("healthcheck")["tests"]
        assert tests[:3] == ["CMD", "bash", "-c"], c.name
        # Healthy once pgp-apply reported a bundle applied and the server answers on TCP.
        assert tests[3].startswith(f"grep -q '\"ok\": true' {delivery.STATUS_FILE} && "), c.name
        assert "pg_isready -q -h 127.0.0.1" in tests[3]
        published[c.name] = ports[0]["external"]
    assert published == {"primary": 5432, "replica-1": 5433, "replica-2": 5434, "pooler": 6432}
    for r in dev.mocks.resources:
        for rule in validators.RULES:
            if not rule.stack:
                found = _violations(rule.validate, r)
                assert found == [], (rule.name, r.name, found)


def _violations(validate: Any, r: cm.Recorded) -> list[str]:
    found: list[str] = []
    validate(_args(r), lambda message, *_: found.append(message))
    return found


def _args(r: cm.Recorded) -> Any:
    class A:
        resource_type = r.typ
        props = cm.plain(r.inputs)
    return A()


def test_files_equal_the_shared_renderings(dev: cm.Run, cfg: config.PlatformConfig) -> None:
    paths = render.HostPaths(data_dir="/home/postgres/pgdata/data",
                             socket_dir="/var/run/postgresql",
                             pgbackrest_config="/etc/pg-platform/pgbackrest.conf")
    primary = files_of(dev, "primary")
    assert primary["/etc/pg-platform/postgresql.conf"] == render.postgresql_conf(
        cfg, paths, timescaledb=True, listen="*", tls=dfiles.SERVER_TLS)
    assert primary["/etc/pg-platform/pg_hba.conf"] == render.pg_hba_conf(
        cfg, ("172.28.16.0/24",), ident_map=False, tls=True)
    assert "\nhost " not in primary["/etc/pg-platform/pg_hba.conf"]
    assert primary["/etc/pg-platform/pgbackrest.conf"] == render.pgbackrest_conf(
        cfg, paths, dfiles.backup_paths())
    pooler = files_of(dev, "pooler")
    assert pooler["/etc/pg-platform/pgbouncer.ini"] == render.pgbouncer_ini(
        cfg, render.PoolerPaths(auth_file="/etc/pg-platform/userlist.txt", socket_dir="/tmp",
                                pid_file="/tmp/pgbouncer.pid"),
        render.PoolerTargets(listen_address="*", primary_host="primary", primary_port=5432,
                             replica_hosts=("replica-1", "replica-2"), replica_port=5432),
        dfiles.POOLER_TLS)
    app, admin = dev.mocks.password("app"), dev.mocks.password("pgbouncer_admin")
    assert pooler["/etc/pg-platform/userlist.txt"] == render.userlist_txt(
        render.pooler_users(cfg, app, admin))


def test_replicas_stream_from_the_primary(dev: cm.Run, cfg: config.PlatformConfig) -> None:
    primary = dev.mocks.one(CONTAINER, "primary")
    assert primary.get("networksAdvanced")[0]["aliases"] == ["primary"]
    for i in (1, 2):
        files = files_of(dev, f"replica-{i}")
        conf = files["/etc/pg-platform/postgresql.conf"]
        assert f"primary_conninfo = 'host=primary port=5432 user={cfg.postgres.replication_role}"\
            in conf
        assert f"primary_slot_name = 'replica_{i}'" in conf
        assert "archive_mode = off" in conf     # only the primary archives WAL
        assert "sslmode=verify-full sslrootcert=/etc/pg-platform/tls/ca.crt'" in conf
        start = files["/etc/pg-platform/start.sh"]
        assert (f'PRIMARY="host=primary port=5432 user={cfg.postgres.replication_role} '
                'sslmode=verify-full') in start
        # It clones through the slot the primary's pgp-apply makes (as on prod).
        assert f"-X stream -S replica_{i}" in start and "gave up after" in start
        assert f"READ_REPLICATION_SLOT replica_{i}" in start and " -C " not in start


def test_secrets_stay_secret(dev: cm.Run, cfg: config.PlatformConfig) -> None:
    passwords = [dev.mocks.password(r) for r in
                 (cfg.postgres.owner_role, "app", "replicator", "pgbouncer_admin",
                  "platform_monitor", "tenant_admin")]
    for r in dev.mocks.resources:
        if r.typ.startswith("pulumi-python:dynamic"):
            continue
        visible = repr(_strip_secrets(r.inputs))
        for pw in passwords:
            assert pw not in visible, f"{r.typ} {r.name} shows a password in plain inputs"
    # A bundle is one secret: in state, and in its directory (0700, bundle.json 0600).
    for name in ("primary", "replica-1", "replica-2", "pooler"):
        assert cm.is_secret(dev.mocks.one(BUNDLE, f"{name}-bundle").inputs["bundle"]), name
        assert not cm.contains_secret(dev.mocks.one(CONTAINER, name).inputs), name
    sql = bundle_of(dev, "primary")["sql"]
    assert scram.verifier("app", passwords[1]) in sql and passwords[1] not in sql
    assert all(pw not in sql for pw in passwords)
    primary = files_of(dev, "primary")
    # No superuser password exists: the break-glass role logs in by peer on the socket only.
    assert not any("superuser-password" in path for path in primary)
    assert "/home/postgres/.pgpass" not in primary
    envs = dev.mocks.one(CONTAINER, "primary").get("envs")
    assert not any(e.startswith("POSTGRES_") for e in envs)
    for name in ("primary", "replica-1", "pooler"):
        text = json.dumps(dev.mocks.one(CONTAINER, name).inputs)
        assert all(pw not in text for pw in passwords), name
    replica_pgpass = files_of(dev, "replica-1")["/home/postgres/.pgpass"]
    assert passwords[0] not in replica_pgpass and passwords[2] in replica_pgpass
    # Every secret-bearing file is the server user's, 0600; the rest root's, 0644.
    for name in ("primary", "replica-1", "pooler"):
        for f in bundle_of(dev, name)["files"]:
            want = ("postgres", "0600") if f["path"] in SECRET_FILES else ("root", "0644")
            assert (f["owner"], f["mode"]) == want, (name, f["path"])


def _strip_secrets(value: Any) -> Any:
    if cm.is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {k: _strip_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secrets(v) for v in value]
    return value


def test_outputs_match_the_local_stack_names(dev: cm.Run) -> None:
    out = dev.outputs
    assert all(out["secret"].values())
    app = dev.mocks.password("app")
    def app_at(port: int, user: str = "app", password: str = app,
               dbname: str = "platform") -> dict[str, str]:
        return {"host": "127.0.0.1", "port": str(port), "user": user, "password": password,
                "dbname": dbname, "sslmode": "verify-full",
                "sslrootcert": str(state_dir(config.load(RAW, "dev")) / "ca.crt")}

    assert conninfo_to_dict(out["app_dsn"]) == app_at(5432)
    assert conninfo_to_dict(out["pooler_dsn"]) == app_at(6432)
    assert [conninfo_to_dict(d) for d in out["replica_dsns"]] == [app_at(p) for p in (5433, 5434)]
    assert conninfo_to_dict(out["primary_dsn"]) == app_at(
        5432, "platform_owner", dev.mocks.password("platform_owner"))
    assert conninfo_to_dict(out["pooler_admin_dsn"]) == app_at(
        6432, "pgbouncer_admin", dev.mocks.password("pgbouncer_admin"), "pgbouncer")


def test_no_replicas_means_no_replica_containers() -> None:
    run = cm.run({**RAW, "replicas": 0}, "dev")
    assert {r.name for r in run.mocks.of_type(CONTAINER)} == {"primary", "pooler"}
    assert run.outputs["replica_dsns"] == []


def test_the_dev_stack_file_builds() -> None:
    raw = cm.stack_file("dev")
    run = cm.run(raw, "dev")
    containers = {r.name for r in run.mocks.of_type(CONTAINER)}
    # The committed dev stack runs Patroni: etcd and HAProxy containers too.
    assert raw["ha"]["manager"] == "patroni" and int(raw["replicas"]) == 2
    assert containers == {"primary", "pooler", "etcd-1", "etcd-2", "etcd-3", "haproxy",
                          *[f"replica-{i}" for i in range(1, int(raw["replicas"]) + 1)]}


def test_testinfra_hosts_hash_what_the_containers_receive(dev: cm.Run,
                                                          cfg: config.PlatformConfig) -> None:
    hosts = dev.outputs["testinfra_hosts"]
    by_name = {h["name"]: h for h in hosts}
    assert [h["name"] for h in hosts] == ["primary", "replica-1", "replica-2", "pooler"]
    assert {n: h["role"] for n, h in by_name.items()} == {
        "primary": "primary", "replica-1": "replica", "replica-2": "replica",
        "pooler": "pooler"}
    for name, host in by_name.items():
        container = dev.mocks.one(CONTAINER, name)
        assert host["spec"] == f"docker://{container.get('name')}" == f"docker://pgp-dev-{name}"
        assert host["service_user"] == "postgres"
        sent = files_of(dev, name)
        # Every non-secret rendered file is listed, with the digest of exactly what its
        # bundle holds; certificates are made at `up` by the stack's CA, not rendered.
        assert host["files"] == {p: sha256(c) for p, c in sent.items()
                                 if p not in SECRET_FILES | set(dfiles.TLS_FILES)}, name
    assert by_name["primary"]["data_dir"] == "/home/postgres/pgdata/data"
    assert by_name["primary"]["pgbackrest_config"] == "/etc/pg-platform/pgbackrest.conf"
    assert "/etc/pg-platform/postgresql.conf" in by_name["replica-1"]["files"]
    pooler = by_name["pooler"]
    assert pooler["pooler_ini"] == "/etc/pg-platform/pgbouncer.ini"
    assert set(pooler["files"]) == {pooler["pooler_ini"], "/etc/pg-platform/pgbouncer-ctl.sh"}
    assert pooler["auth_file"] == "/etc/pg-platform/userlist.txt"
    assert "pooler_ini" not in by_name["primary"] and "pgbackrest_config" not in \
        by_name["replica-1"]
    _no_secret_in(dev, cfg, hosts)


SECRET_FILES = dfiles.SECRET_FILES


def _no_secret_in(run: cm.Run, cfg: config.PlatformConfig, hosts: list[dict[str, Any]]) -> None:
    roles = (cfg.postgres.owner_role, "app", "replicator", "pgbouncer_admin")
    text = repr(hosts)
    for role in roles:
        pw = run.mocks.password(role)
        assert pw not in text and scram.verifier(role, pw) not in text
    assert sha256(render.userlist_txt(render.pooler_users(
        cfg, run.mocks.password("app"), run.mocks.password("pgbouncer_admin")))) not in text


def test_testinfra_hosts_parse_as_the_suite_reads_them(dev: cm.Run) -> None:
    parsed = exported_inventory(dev.outputs)
    assert [h.role for h in parsed] == ["primary", "replica", "replica", "pooler"]
    assert parsed[-1].spec == "docker://pgp-dev-pooler" and parsed[-1].files


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_containers_are_deleted_before_their_replacement(dev: cm.Run) -> None:
    import pulumi

    parent = pulumi.ComponentResource.__new__(pulumi.ComponentResource)
    assert backend.container_options(parent, []).delete_before_replace is True


def test_tls_on_every_container_with_its_own_certificate(dev: cm.Run) -> None:
    certs = {r.name: cm.plain(r.inputs["hosts"]) for r in dev.mocks.of_type(cm.HOST_CERT)}
    assert certs == {
        "primary-tls": ["primary", "127.0.0.1", "localhost"],
        "replica-1-tls": ["replica-1", "127.0.0.1", "localhost", "replica-1,replica-2"],
        "replica-2-tls": ["replica-2", "127.0.0.1", "localhost", "replica-1,replica-2"],
        "pooler-tls": ["pooler", "127.0.0.1", "localhost"]}
    for name in ("primary", "replica-1", "pooler"):
        sent = files_of(dev, name)
        assert sent["/etc/pg-platform/tls/server.key"] == f"key-{name}-tls"
    assert dev.outputs["ca_cert"] == "ca-cert-tls-ca"
    pooler = dev.mocks.one(CONTAINER, "pooler")
    limit = pooler.get("ulimits")[0]
    assert limit == {"name": "nofile", "soft": dfiles.NOFILE, "hard": dfiles.NOFILE}
    with pytest.raises(config_errors.ConfigError,
                       match=r"pg-platform:pooler.max_client_conn=70000: .*allowed"):
        cm.run({**RAW, "pooler": {"max_client_conn": 70000}}, "dev")


def test_a_rotation_reaches_roles_userlist_and_passfiles() -> None:
    before, after = cm.run(RAW, "dev"), cm.run({**RAW, "rotation": 1}, "dev")
    assert bundle_of(before, "primary")["sql"] != bundle_of(after, "primary")["sql"]
    for name, path in (("pooler", "/etc/pg-platform/userlist.txt"),
                       ("replica-1", "/home/postgres/.pgpass")):
        assert files_of(before, name)[path] != files_of(after, name)[path], (name, path)
    assert ({v.get("name") for v in before.mocks.of_type("docker:index/volume:Volume")}
            == {v.get("name") for v in after.mocks.of_type("docker:index/volume:Volume")})


def test_an_image_pinned_by_digest_is_used_as_given_and_a_bare_tag_refused() -> None:
    pinned = "timescale/timescaledb-ha:pg15@sha256:" + "ab" * 32
    run = cm.run({**RAW, "docker": {**RAW["docker"], "image": pinned}}, "dev")
    assert run.mocks.of_type("docker:index/remoteImage:RemoteImage")[0].get("name") == pinned
    assert backend.BACKEND.versions(config.load(
        {**RAW, "docker": {**RAW["docker"], "image": pinned}}, "dev")) == (15,)
    for key, bad in (("image", pinned[:-2]), ("image", "timescale/timescaledb-ha:pg15"),
                     ("pooler_image", "edoburu/pgbouncer:latest")):
        with pytest.raises(config_errors.ConfigError) as err:
            config.load({**RAW, "docker": {**RAW["docker"], key: bad}}, "dev")
        assert str(err.value).startswith(f"pg-platform:docker.{key}={bad!r}: not pinned by "
                                         "digest; allowed is NAME[:TAG]@sha256:"), err.value
    # The default is pinned; an unpinned one is refused on every stack, not only on dev.
    assert config.DockerSettings().image == config.DEFAULT_IMAGE
    assert config.load({}, "dev").docker == config.DockerSettings()
    with pytest.raises(config_errors.ConfigError, match=r"docker.image="):
        config.load({"docker": {"image": "postgres:15"}}, "local")
