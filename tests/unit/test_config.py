"""Stack settings: defaults, and bad values rejected with key, value and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config
from infra.errors import ConfigError


def test_defaults_are_a_loopback_primary() -> None:
    cfg = config.load({}, "local")
    assert cfg.backend == "local"
    assert cfg.postgres.listen_address == "127.0.0.1"
    assert cfg.postgres.owner_role != cfg.postgres.app_role
    assert cfg.replicas == 0


@pytest.mark.parametrize("stack,backend", [("local", "local"), ("dev", "docker"),
                                           ("ci-1", "local")])
def test_backend_follows_the_stack_name_by_default(stack: str, backend: str) -> None:
    assert config.load({}, stack).backend == backend


def test_prod_defaults_to_aws_which_needs_a_vpc() -> None:
    with pytest.raises(ConfigError, match=r"pg-platform:aws\.vpc_id: required"):
        config.load({}, "prod")


def test_parameters_are_sorted_and_stringified() -> None:
    cfg = config.load({"postgres": {"parameters": {"jit": False, "log_statement": "ddl",
                                                   "autovacuum_naptime": 30}}}, "local")
    assert cfg.postgres.parameters == (("autovacuum_naptime", "30"), ("jit", "off"),
                                       ("log_statement", "ddl"))


BAD: list[tuple[dict[str, Any], str]] = [
    ({"backend": "kubernetes"},
     "pg-platform:backend='kubernetes': allowed values are local, docker, aws"),
    ({"replicas": 6}, "pg-platform:replicas=6: allowed range is 0 to 5"),
    ({"replicas": "two"}, "pg-platform:replicas='two': expected a whole number from 0 to 5"),
    ({"replicas": True}, "pg-platform:replicas=True: expected a whole number"),
    ({"postgres": {"port": 80}}, "pg-platform:postgres.port=80: allowed range is 1024 to 65535"),
    ({"postgres": {"max_connections": 5}},
     "pg-platform:postgres.max_connections=5: allowed range is 10 to 10000"),
    ({"postgres": {"shared_buffers": "lots"}},
     "pg-platform:postgres.shared_buffers='lots': expected a size such as '128MB'"),
    ({"postgres": {"work_mem": "4mb"}}, "pg-platform:postgres.work_mem='4mb'"),
    ({"postgres": {"database": "Robert'); DROP TABLE students;--"}},
     "pg-platform:postgres.database=\"Robert'); DROP TABLE students;--\": expected a "
     "lowercase SQL identifier"),
    ({"postgres": {"app_role": "platform_owner"}},
     "pg-platform:postgres.app_role='platform_owner': the app role must differ"),
    ({"postgres": {"owner_role": "postgres"}}, "'postgres' is reserved"),
    ({"postgres": {"superuser_reserved_connections": 20, "max_connections": 20}},
     "pg-platform:postgres.superuser_reserved_connections=20 must be below "
     "pg-platform:postgres.max_connections=20"),
    ({"postgres": {"parameters": {"port": "5433"}}},
     "pg-platform:postgres.parameters.port: 'port' is set by pg-platform"),
    ({"postgres": {"parameters": {"Bad Name": "1"}}},
     "pg-platform:postgres.parameters.Bad Name: 'Bad Name' is not a PostgreSQL setting name"),
    ({"postgres": {"parameters": {"work_mem": "1MB\nlisten_addresses='*'"}}},
     "holds the control character"),
    ({"postgres": {"prot": 5432}},
     "pg-platform:postgres.prot: unknown setting; allowed settings here are"),
    ({"postgres": ["port", 5432]}, "pg-platform:postgres: expected a mapping"),
    ({"replica": 2}, "pg-platform:replica: unknown setting"),
    ({"state_dir": 7}, "pg-platform:state_dir=7: expected a path string"),
    ({"postgres": {"version": 9}}, "pg-platform:postgres.version=9: allowed range is 13 to 17"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_values_are_rejected_with_key_value_and_allowed(raw: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(raw, "local")
    assert message in str(err.value)


def test_memory_bytes() -> None:
    assert config.memory_bytes("128MB") == 128 * 1024 * 1024
    assert config.memory_bytes("1GB") == 1 << 30
    with pytest.raises(ConfigError):
        config.memory_bytes("12")


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_the_repository_stack_files_are_valid(stack: str) -> None:
    import json
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / f"Pulumi.{stack}.yaml")
                         .read_text())
    # Pulumi hands scalars to the program as strings, as from_pulumi() expects.
    raw = {k.split(":", 1)[1]: json.loads(v) if isinstance(v, str) and v.isdigit() else v
           for k, v in doc["config"].items() if k.startswith("pg-platform:")}
    cfg = config.load(raw, stack)
    assert cfg.backend == {"local": "local", "dev": "docker", "prod": "aws"}[stack]
    assert cfg.tenants, "every stack file lists its tenants"
