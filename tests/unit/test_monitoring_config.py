"""pg-platform:monitoring: defaults, refusals naming the key, backup age from the schedule."""

from __future__ import annotations

import pytest

from infra.config import (
    MonitoringSettings,
    Section,
    full_backup_max_age_seconds,
    parse_monitoring,
    schedule_period_hours,
)
from infra.errors import ConfigError


def parse(raw: dict[str, object]) -> MonitoringSettings:
    return parse_monitoring(Section(raw, "monitoring"))


def test_defaults() -> None:
    assert parse({}) == MonitoringSettings()


def test_values_are_read() -> None:
    mon = parse({"replication_lag_seconds": 5, "replication_lag_bytes": "1MB",
                 "connections_warn_percent": 50, "full_backup_max_age_hours": 30})
    assert (mon.replication_lag_seconds, mon.replication_lag_bytes) == (5, 1 << 20)
    assert mon.connections_warn_percent == 50
    assert full_backup_max_age_seconds(mon, "0 1 * * 0") == 30 * 3600


@pytest.mark.parametrize(("raw", "needle"), [
    ({"replication_lag_seconds": 0}, "pg-platform:monitoring.replication_lag_seconds=0"),
    ({"replication_lag_bytes": "lots"}, "pg-platform:monitoring.replication_lag_bytes='lots'"),
    ({"connections_warn_percent": 96}, "must be below pg-platform:monitoring.connections_crit"),
    ({"pgbouncer_exporter_port": 9187, "postgres_exporter_port": 9187}, "must differ"),
    ({"exporters": "yes"}, "expected true or false"),
    ({"lag": 3}, "pg-platform:monitoring.lag: unknown setting"),
])
def test_refusals_name_key_and_value(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize(("cron", "hours"), [
    ("0 1 * * 0", 168),       # weekly
    ("0 1 * * 1-6", 48),      # six days a week: at most two days apart
    ("0 1 * * *", 24),        # daily
    ("0 */4 * * *", 4),
    ("0 1 1 * *", 744),       # monthly
    ("*/5 * * * *", 1),
])
def test_schedule_period(cron: str, hours: int) -> None:
    assert schedule_period_hours(cron) == hours


def test_max_age_derives_from_schedule_plus_grace() -> None:
    mon = MonitoringSettings(backup_grace_hours=2)
    assert full_backup_max_age_seconds(mon, "0 1 * * *") == 26 * 3600


def test_exporter_ports_default_per_backend() -> None:
    from infra import config
    from infra.config import exporter_ports

    local = config.load({"postgres": {"port": 55432}}, "local")
    assert exporter_ports(local) == (57432, 58432)
    prod = config.load({"postgres": {"port": 5432}, "backend": "docker"}, "x")
    assert exporter_ports(prod) == (9187, 9127)
    fixed = config.load({"monitoring": {"postgres_exporter_port": 20000}}, "local")
    assert exporter_ports(fixed)[0] == 20000
    with pytest.raises(ConfigError, match="pass 65535"):
        exporter_ports(config.load({"postgres": {"port": 64000}}, "local"))


def test_low_exporter_port_refused() -> None:
    with pytest.raises(ConfigError, match=r"monitoring\.postgres_exporter_port=80"):
        parse({"postgres_exporter_port": 80})
