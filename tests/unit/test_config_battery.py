"""A battery of bad stack values (issue #16): each refused by the loader, naming key and value.

Every value from the issue's Why is here (work_mem 3TB, shared_buffers 100TB,
cron `61 25 * * *` and `*/0`, pooler.port equal to the PostgreSQL port,
state_dir ../../../etc/x and /, database template1, role pg_evil), with sizes,
counts, ports, cron fields, paths, reserved names, trailing newlines and a
500-character tenant name. tests/integration/test_config_battery_preview.py
runs a sample of them through `pulumi preview`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config
from infra.config.names import shown
from infra.config.neighbours import check_neighbours, other_stacks
from infra.errors import ConfigError

LONG_NAME = "N" * 500


def _cron(name: str, expr: str) -> dict[str, Any]:
    return {"backup": {"schedule": {name: expr}}}


# (id, settings, the key the message names, the value it names)
BAD: list[tuple[str, dict[str, Any], str, Any]] = [
    # sizes
    ("work_mem 3TB", {"postgres": {"work_mem": "3TB"}}, "postgres.work_mem", "3TB"),
    ("shared_buffers 100TB", {"postgres": {"shared_buffers": "100TB"}},
     "postgres.shared_buffers", "100TB"),
    ("maintenance_work_mem 100GB", {"postgres": {"maintenance_work_mem": "100GB"}},
     "postgres.maintenance_work_mem", "100GB"),
    ("work_mem 1kB", {"postgres": {"work_mem": "1kB"}}, "postgres.work_mem", "1kB"),
    ("effective_cache_size 0MB", {"postgres": {"effective_cache_size": "0MB"}},
     "postgres.effective_cache_size", "0MB"),
    ("shared_buffers -1MB", {"postgres": {"shared_buffers": "-1MB"}},
     "postgres.shared_buffers", "-1MB"),
    ("replication_lag_bytes 1PB", {"monitoring": {"replication_lag_bytes": "1PB"}},
     "monitoring.replication_lag_bytes", "1PB"),
    # counts
    ("max_connections 0", {"postgres": {"max_connections": 0}}, "postgres.max_connections", 0),
    ("max_connections 10^6", {"postgres": {"max_connections": 1_000_000}},
     "postgres.max_connections", 1_000_000),
    ("replicas -1", {"replicas": -1}, "replicas", -1),
    ("replicas 99", {"replicas": 99}, "replicas", 99),
    ("retention_full 0", {"backup": {"retention_full": 0}}, "backup.retention_full", 0),
    ("process_max 1000", {"backup": {"process_max": 1000}}, "backup.process_max", 1000),
    ("default_pool_size 0", {"pooler": {"default_pool_size": 0}}, "pooler.default_pool_size", 0),
    ("max_client_conn 10^6", {"pooler": {"max_client_conn": 1_000_000}},
     "pooler.max_client_conn", 1_000_000),
    ("scrape_interval 0", {"monitoring": {"scrape_interval_seconds": 0}},
     "monitoring.scrape_interval_seconds", 0),
    ("tenant_quota below tenants", {"tenant_quota": 1, "tenants": [{"slug": "a"}, {"slug": "b"}]},
     "tenant_quota", 1),
    # ports
    ("pooler.port = postgres.port", {"postgres": {"port": 6000}, "pooler": {"port": 6000}},
     "pooler.port", 6000),
    ("postgres.port 80", {"postgres": {"port": 80}}, "postgres.port", 80),
    ("postgres.port 70000", {"postgres": {"port": 70000}}, "postgres.port", 70000),
    ("pooler.port 1023", {"pooler": {"port": 1023}}, "pooler.port", 1023),
    ("pooler.port = replicas' port", {"replicas": 1, "postgres": {"port": 6000},
                                      "pooler": {"port": 6001}}, "pooler.port", 6001),
    ("exporter port = pooler.port", {"pooler": {"port": 7000},
                                     "monitoring": {"postgres_exporter_port": 7000}},
     "pooler.port", 7000),
    ("exporter port 80", {"monitoring": {"pgbouncer_exporter_port": 80}},
     "monitoring.pgbouncer_exporter_port", 80),
    # cron fields
    ("cron 61 25 * * *", _cron("full", "61 25 * * *"), "backup.schedule.full", "61 25 * * *"),
    ("cron */0", _cron("incr", "*/0 * * * *"), "backup.schedule.incr", "*/0 * * * *"),
    ("cron 30 February", _cron("diff", "0 1 30 2 *"), "backup.schedule.diff", "0 1 30 2 *"),
    ("cron month 13", _cron("full", "0 0 * 13 *"), "backup.schedule.full", "0 0 * 13 *"),
    ("cron weekday 8", _cron("full", "0 0 * * 8"), "backup.schedule.full", "0 0 * * 8"),
    ("cron four fields", _cron("full", "0 0 * *"), "backup.schedule.full", "0 0 * *"),
    ("cron @hourly", _cron("incr", "@hourly"), "backup.schedule.incr", "@hourly"),
    ("cron hour 24", _cron("diff", "0 24 * * 1-6"), "backup.schedule.diff", "0 24 * * 1-6"),
    # paths
    ("state_dir ../../../etc/x", {"state_dir": "../../../etc/x"}, "state_dir", "../../../etc/x"),
    ("state_dir /", {"state_dir": "/"}, "state_dir", "/"),
    ("state_dir /etc/pgp", {"state_dir": "/etc/pgp"}, "state_dir", "/etc/pgp"),
    ("state_dir /usr/local/pgp", {"state_dir": "/usr/local/pgp"}, "state_dir", "/usr/local/pgp"),
    ("state_dir infra", {"state_dir": "infra"}, "state_dir", "infra"),
    ("state_dir .state/backend", {"state_dir": ".state/backend"}, "state_dir", ".state/backend"),
    ("state_dir .state/../x", {"state_dir": ".state/../x"}, "state_dir", ".state/../x"),
    ("state_dir /tmp", {"state_dir": "/tmp"}, "state_dir", "/tmp"),
    # reserved names
    ("database template1", {"postgres": {"database": "template1"}}, "postgres.database",
     "template1"),
    ("database template0", {"postgres": {"database": "template0"}}, "postgres.database",
     "template0"),
    ("database postgres", {"postgres": {"database": "postgres"}}, "postgres.database",
     "postgres"),
    ("database select", {"postgres": {"database": "select"}}, "postgres.database", "select"),
    ("role pg_evil", {"postgres": {"app_role": "pg_evil"}}, "postgres.app_role", "pg_evil"),
    ("role pg_monitor", {"postgres": {"owner_role": "pg_monitor"}}, "postgres.owner_role",
     "pg_monitor"),
    ("role public", {"postgres": {"replication_role": "public"}},
     "postgres.replication_role", "public"),
    ("role user", {"postgres": {"owner_role": "user"}}, "postgres.owner_role", "user"),
    ("role platform_monitor", {"postgres": {"app_role": "platform_monitor"}},
     "postgres.app_role", "platform_monitor"),
    ("admin_user pg_admin", {"pooler": {"admin_user": "pg_admin"}}, "pooler.admin_user",
     "pg_admin"),
    ("tenant slug 51 chars", {"tenants": [{"slug": "s" * 51}]}, "tenants[0].slug", "s" * 51),
    ("tenant slug Acme", {"tenants": [{"slug": "Acme"}]}, "tenants[0].slug", "Acme"),
    # trailing newlines and long text
    ("database trailing newline", {"postgres": {"database": "platform\n"}},
     "postgres.database", "platform\n"),
    ("listen_address trailing newline", {"postgres": {"listen_address": "127.0.0.1\n"}},
     "postgres.listen_address", "127.0.0.1\n"),
    ("stanza trailing newline", {"backup": {"stanza": "main\n"}}, "backup.stanza", "main\n"),
    ("tenant name newline", {"tenants": [{"slug": "acme", "name": "Acme\nCorp"}]},
     "tenants[0].name", "Acme\nCorp"),
    ("tenant name 500 characters", {"tenants": [{"slug": "acme", "name": LONG_NAME}]},
     "tenants[0].name", LONG_NAME),
    ("cron trailing newline", _cron("full", "0 1 * * 0\n"), "backup.schedule.full",
     "0 1 * * 0\n"),
    # versions and intervals
    ("postgres.version 12", {"postgres": {"version": 12}}, "postgres.version", 12),
    ("retention 0 days", {"timescaledb": {"retention": "0 days"}}, "timescaledb.retention",
     "0 days"),
]


def _named(message: str, key: str, value: Any) -> bool:
    full = f"pg-platform:{key}"
    if isinstance(value, str):
        return f"{full}={shown(value)}" in message or (f"{full}: " in message and
                                                       shown(value) in message)
    return f"{full}={value}" in message or f"{full}={value!r}" in message


def test_the_battery_has_at_least_40_values() -> None:
    assert len(BAD) >= 40


@pytest.mark.parametrize(("settings", "key", "value"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_each_bad_value_is_refused_naming_key_and_value(settings: dict[str, Any], key: str,
                                                        value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(settings, "battery")
    assert _named(str(err.value), key, value), str(err.value)


def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 54321, -1)  # neither us nor the service user
    with pytest.raises(ConfigError, match=r"state_dir=.*is not owned by the user"):
        config.load({"state_dir": str(theirs / "pgp")}, "battery")
    mine = tmp_path / "mine"
    assert config.load({"state_dir": str(mine)}, "battery").state_dir == str(mine)


def _stack_file(project: Path, name: str, values: dict[str, Any]) -> None:
    (project / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(
        {"config": {f"pg-platform:{k}": v for k, v in values.items()}}))


def test_another_stacks_ports_and_folder_are_refused(tmp_path: Path) -> None:
    _stack_file(tmp_path, "other", {"backend": "local", "postgres": {"port": 61000},
                                    "state_dir": str(tmp_path / "other-state")})
    same_port = config.load({"postgres": {"port": 61000}, "state_dir": str(tmp_path / "a")},
                            "mine")
    with pytest.raises(ConfigError, match=r"pg-platform:postgres\.port=61000: stack 'other'"):
        check_neighbours(same_port, tmp_path)
    pooler = config.load({"postgres": {"port": 61500}, "pooler": {"port": 62000},
                          "state_dir": str(tmp_path / "a")}, "mine")
    with pytest.raises(ConfigError, match=r"pg-platform:pooler\.port=62000: stack 'other'"):
        check_neighbours(pooler, tmp_path)  # the other stack's default pooler port
    folder = config.load({"postgres": {"port": 61500}, "pooler": {"port": 62700},
                          "state_dir": str(tmp_path / "other-state" / "x")}, "mine")
    with pytest.raises(ConfigError, match=r"pg-platform:state_dir=.*overlaps stack 'other'"):
        check_neighbours(folder, tmp_path)
    fine = config.load({"postgres": {"port": 61500}, "pooler": {"port": 62700},
                        "state_dir": str(tmp_path / "mine")}, "mine")
    check_neighbours(fine, tmp_path)


def test_the_committed_stacks_do_not_collide() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("local", "dev"):
        cfg = other_stacks(root, "none")[name]
        check_neighbours(cfg, root)
