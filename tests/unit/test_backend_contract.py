"""Every backend keeps the contract of infra/backends/base.py, under Pulumi mocks.

The same output names, each a value of the agreed shape, the DSNs secret and
parseable by libpq; the registry holds exactly the backends the config allows;
a PostgreSQL version a backend cannot run is refused before anything is made.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from infra import config, hostctl
from infra.backends import registry
from infra.backends.base import OUTPUTS, check_version, slot_name
from infra.errors import ConfigError
from tests.unit import cloud_mocks as cm
from tests.unit.test_aws_backend import RAW as AWS_RAW
from tests.unit.test_docker_backend import RAW as DOCKER_RAW

STACKS: dict[str, tuple[dict[str, Any], str]] = {
    "local": ({"postgres": {"port": 45432}, "replicas": 2}, "local"),
    "docker": (DOCKER_RAW, "dev"),
    "aws": (AWS_RAW, "prod"),
}
DSNS = ("primary_dsn", "app_dsn", "pooler_dsn", "pooler_admin_dsn")


@pytest.fixture(scope="module", params=sorted(STACKS))
def run(request: pytest.FixtureRequest) -> tuple[str, cm.Run]:
    raw, stack = STACKS[request.param]
    result = cm.run(raw, stack)
    assert config.load(raw, stack).backend == request.param
    return request.param, result


def test_every_backend_exports_the_same_outputs(run: tuple[str, cm.Run]) -> None:
    backend, result = run
    out = result.outputs
    assert [k for k in out if k not in ("secret", "plain")] == list(OUTPUTS), backend
    assert all(out["secret"].values()), out["secret"]
    assert out["plain"] == ["ca_cert", "testinfra_hosts"], (backend, out["plain"])
    for name in DSNS:
        params = conninfo_to_dict(out[name])
        assert {"host", "port", "user", "password", "dbname"} <= set(params), (backend, name)
    assert conninfo_to_dict(out["pooler_admin_dsn"])["dbname"] == "pgbouncer"
    assert len(out["replica_dsns"]) == 2
    # local: the CA made by infra/tls.py's provider, which mocks do not run (the engine
    # tests read the real PEM); docker and aws: the stack CA (infra/cloud_tls.py), which
    # the mocks name after its resource. Every DSN verifies the server against it.
    assert out["ca_cert"] == (None if backend == "local" else "ca-cert-tls-ca")
    for name in DSNS:
        assert conninfo_to_dict(out[name])["sslmode"] == "verify-full", (backend, name)
    roles = sorted(h["role"] for h in out["testinfra_hosts"])
    assert roles == ["pooler", "primary", "replica", "replica"], (backend, roles)
    for host in out["testinfra_hosts"]:
        assert {"name", "role", "spec", "service_user", "files"} <= set(host)


def test_the_registry_holds_every_configurable_backend() -> None:
    assert tuple(registry.MODULES) == config.BACKENDS
    assert [registry.get(name).name for name in config.BACKENDS] == list(config.BACKENDS)
    with pytest.raises(ConfigError, match=r"pg-platform:backend='nope': allowed values are"):
        registry.get("nope")


def test_slot_names_are_one_rule() -> None:
    assert [slot_name(i) for i in (1, 2)] == ["replica_1", "replica_2"]


@pytest.mark.parametrize(("backend", "raw", "stack"), [
    ("local", {"postgres": {"version": 17}}, "local"),
    ("docker", {**DOCKER_RAW, "postgres": {"version": 16}}, "dev"),
    ("aws", {**AWS_RAW, "postgres": {"version": 14}}, "prod"),
])
def test_a_version_the_backend_cannot_run_is_refused_naming_those_it_can(
        backend: str, raw: dict[str, Any], stack: str) -> None:
    cfg = config.load(raw, stack)
    can = registry.get(backend).versions(cfg)
    assert cfg.postgres.version not in can
    allowed = ", ".join(map(str, can)) or "none"
    with pytest.raises(ConfigError) as err:
        check_version(registry.get(backend), cfg)
    assert str(err.value) == (f"pg-platform:postgres.version={cfg.postgres.version}: the "
                              f"{backend} backend can run {allowed}")


def test_each_backend_runs_its_own_version() -> None:
    assert registry.get("local").versions(config.load({}, "local")) == \
        hostctl.installed_versions()
    assert 15 in hostctl.installed_versions()
    assert registry.get("docker").versions(config.load(DOCKER_RAW, "dev")) == (15,)
    custom = {**DOCKER_RAW, "docker": {"image": "example/postgres:pg16-ts2.17@sha256:"
                                                 + "0" * 64}}
    assert registry.get("docker").versions(config.load(custom, "dev")) == (16,)
    assert registry.get("aws").versions(config.load(AWS_RAW, "prod")) == (15, 16, 17)
