"""Monitoring settings: exporter ports and the thresholds health and alerts share.

One set of numbers drives three things, so they cannot disagree: the health
command's verdict, the rendered Prometheus alert rules, and the exporters'
ports. They live under `pg-platform:monitoring` in the stack file. Which
port an exporter gets on which backend is `infra.config.platform.exporter_ports`.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config.section import Section, memory_bytes
from infra.errors import ConfigError

_HOUR = 3600
# Where exporters listen when the ports are left at 0. On hosts of their own
# (docker, aws) the exporters' registered defaults; on the local stack, offsets
# from postgres.port (as the pooler's default is), so that several local stacks,
# and the tests' throw-away ones, never reach for the same port.
HOST_PORTS = (9187, 9127)
LOCAL_OFFSETS = (2000, 3000)


@dataclass(frozen=True)
class MonitoringSettings:
    """Thresholds: crossing a `*_warn` one makes a stack degraded, `*_critical` unhealthy."""

    exporters: bool = True
    postgres_exporter_port: int = 0  # 0: see exporter_ports
    pgbouncer_exporter_port: int = 0
    replication_lag_seconds: int = 30
    replication_lag_bytes: int = 16 << 20
    connections_warn_percent: int = 80
    connections_critical_percent: int = 95
    pool_waiting_clients: int = 1
    pool_maxwait_seconds: int = 5
    # 0: derived from the full-backup schedule (its period plus backup_grace_hours).
    full_backup_max_age_hours: int = 0
    backup_grace_hours: int = 6
    scrape_interval_seconds: int = 15


def schedule_period_hours(cron: str) -> int:
    """The longest gap a cron schedule can leave between two runs, in hours.

    Coarse on purpose: a weekly or monthly expression gives a week or a month,
    a daily one a day; anything finer an hour. Alerts need an upper bound.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ConfigError(f"backup schedule {cron!r}: expected five cron fields")
    _minute, hour, dom, _month, dow = fields
    if dom != "*":
        return 31 * 24
    if dow != "*":
        days = _dow_count(dow)
        return 7 * 24 if days <= 1 else 24 * (7 - days + 1)
    if hour != "*" and "/" not in hour:
        return 24
    if hour.startswith("*/"):
        return int(hour[2:])
    return 1


def _dow_count(dow: str) -> int:
    """How many weekdays a day-of-week field names (step forms count as several)."""
    days: set[int] = set()
    for part in dow.split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo_s, hi_s = rng.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
        else:
            lo = hi = int(rng)
        days.update(d % 7 for d in range(lo, hi + 1, int(step) if step else 1))
    return max(len(days), 1)


def full_backup_max_age_seconds(mon: MonitoringSettings, full_schedule: str) -> int:
    """How old the newest full backup may be before health and alerts complain."""
    if mon.full_backup_max_age_hours:
        return mon.full_backup_max_age_hours * _HOUR
    return (schedule_period_hours(full_schedule) + mon.backup_grace_hours) * _HOUR


def parse_monitoring(section: Section) -> MonitoringSettings:
    """Validate `pg-platform:monitoring`; every value names its key when refused."""
    d = MonitoringSettings()
    lag_bytes_raw = section.memory("replication_lag_bytes", f"{d.replication_lag_bytes >> 20}MB")
    settings = MonitoringSettings(
        exporters=section.flag("exporters", d.exporters),
        postgres_exporter_port=_port(section, "postgres_exporter_port"),
        pgbouncer_exporter_port=_port(section, "pgbouncer_exporter_port"),
        replication_lag_seconds=section.int("replication_lag_seconds",
                                            d.replication_lag_seconds, 1, 86400),
        replication_lag_bytes=memory_bytes(lag_bytes_raw),
        connections_warn_percent=section.int("connections_warn_percent",
                                             d.connections_warn_percent, 1, 100),
        connections_critical_percent=section.int("connections_critical_percent",
                                                 d.connections_critical_percent, 1, 100),
        pool_waiting_clients=section.int("pool_waiting_clients", d.pool_waiting_clients,
                                         1, 100000),
        pool_maxwait_seconds=section.int("pool_maxwait_seconds", d.pool_maxwait_seconds,
                                         1, 86400),
        full_backup_max_age_hours=section.int("full_backup_max_age_hours",
                                              d.full_backup_max_age_hours, 0, 24 * 366),
        backup_grace_hours=section.int("backup_grace_hours", d.backup_grace_hours, 0, 24 * 31),
        scrape_interval_seconds=section.int("scrape_interval_seconds",
                                            d.scrape_interval_seconds, 1, 3600),
    )
    section.finish()
    if settings.connections_warn_percent >= settings.connections_critical_percent:
        raise ConfigError(
            f"{section.where('connections_warn_percent')}={settings.connections_warn_percent} "
            f"must be below {section.where('connections_critical_percent')}="
            f"{settings.connections_critical_percent}")
    if settings.postgres_exporter_port and \
            settings.postgres_exporter_port == settings.pgbouncer_exporter_port:
        raise ConfigError(
            f"{section.where('pgbouncer_exporter_port')}={settings.pgbouncer_exporter_port}: "
            f"must differ from {section.where('postgres_exporter_port')}")
    return settings


def _port(section: Section, name: str) -> int:
    value = section.int(name, 0, 0, 65535)
    if 0 < value < 1024:
        raise ConfigError(f"{section.where(name)}={value}: allowed are 0 (the default for the "
                          "backend) or 1024 to 65535")
    return value
