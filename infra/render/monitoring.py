"""Pure renderers for monitoring: exporter queries and commands, scrape config, alert rules.

Kept beside the other renderers and shared by every backend, so the exporters on a
local stack, in a Docker container and on an EC2 host run the same custom
queries with the same flags, and Prometheus alerts on the same thresholds the
health command uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from psycopg import sql

from infra.config import (
    MonitoringSettings,
    PlatformConfig,
    exporter_ports,
    full_backup_max_age_seconds,
)
from infra.errors import ConfigError
from infra.render.template import render
from infra.schema.files import MigrationSet, Track

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
# Debian's prometheus-pgbouncer-exporter (1.7) reads SHOW STATS columns that
# PgBouncer dropped in 1.8; this launcher maps them before starting it.
PGBOUNCER_EXPORTER_LAUNCHER = MONITORING / "pgbouncer_exporter.py"
# Backup ages from `pgbackrest info`, as the repository's owner: no database login.
PGBACKREST_EXPORTER = MONITORING / "pgbackrest_exporter.py"
POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"
SYSTEM_PYTHON = "/usr/bin/python3"
HISTORY_SCHEMA = "pgplatform"


def _file_rows(ms: MigrationSet, tracks: Sequence[Track]) -> list[dict[str, str]]:
    return [{"track": m.track.value, "kind": m.kind.value, "key": m.key,
             "checksum": m.checksum}
            for m in ms.all() if m.track in tracks]


def postgres_exporter_queries(cfg: PlatformConfig, migrations: MigrationSet,
                              history_schema: str = HISTORY_SCHEMA) -> str:
    """queries.yaml for prometheus-postgres-exporter, run as platform_monitor.

    Every query needs pg_monitor and the read grants of sql/policies/R__monitor.sql
    only; backups come from :func:`pgbackrest_exporter_command` instead.

    :param migrations: the sql/ files this stack deploys; the pending-migration
        metric counts those the database has not applied, so a failed or skipped
        apply after a deploy shows up in Prometheus.
    """
    regclass = f"{sql.Identifier(history_schema).as_string()}.schema_history"
    return render("monitoring/queries.yaml.j2",
                  expected_replicas=cfg.replicas,
                  files=_file_rows(migrations, (Track.SCHEMA, Track.POLICIES)),
                  tenant_files=_file_rows(migrations, (Track.TENANT,)),
                  history_regclass=regclass)


@dataclass(frozen=True)
class ExporterCommand:
    """argv plus the names of environment variables that carry secrets (never argv)."""

    argv: tuple[str, ...]
    secret_env: tuple[str, ...]


def postgres_exporter_command(listen: str, port: int, queries_path: str) -> ExporterCommand:
    """One exporter per PostgreSQL node. Where it logs in comes in DATA_SOURCE_URI and
    DATA_SOURCE_USER, the password in a file named by DATA_SOURCE_PASS_FILE: no secret
    in its environment (tests give DATA_SOURCE_NAME)."""
    return ExporterCommand(
        argv=(POSTGRES_EXPORTER, f"--web.listen-address={listen}:{port}",
              f"--extend.query-path={queries_path}", "--log.level=warn"),
        secret_env=("DATA_SOURCE_NAME",))


def pgbackrest_exporter_command(listen: str, port: int, pgbackrest_config: str, stanza: str,
                                launcher: str = str(PGBACKREST_EXPORTER)) -> ExporterCommand:
    """The backup collector: runs `pgbackrest info` as the repository's owner, no secret."""
    return ExporterCommand(
        argv=(SYSTEM_PYTHON, launcher, "--listen", listen, "--port", str(port),
              "--config", pgbackrest_config, "--stanza", stanza),
        secret_env=())


def pgbackrest_exporter_launcher() -> str:
    return PGBACKREST_EXPORTER.read_text(encoding="utf-8")


def backup_exporter_port(cfg: PlatformConfig) -> int:
    """The local backup collector's port: the pgbouncer exporter's + 1."""
    port = exporter_ports(cfg)[1] + 1
    if port > 65535:
        raise ConfigError(f"pg-platform:monitoring.pgbouncer_exporter_port={port - 1}: the "
                          "backup collector listens on it + 1, which must be at most 65535")
    return port


def pgbouncer_exporter_command(listen: str, port: int, pgbouncer_host: str,
                               pgbouncer_port: int, admin_user: str,
                               launcher: str = str(PGBOUNCER_EXPORTER_LAUNCHER)
                               ) -> ExporterCommand:
    """The pooler's exporter, on PgBouncer's admin console; the password comes in PGPASSWORD."""
    return ExporterCommand(
        argv=(SYSTEM_PYTHON, launcher, "--host", listen, "--port", str(port),
              "--pgbouncer-host", pgbouncer_host, "--pgbouncer-port", str(pgbouncer_port),
              "--pgbouncer-user", admin_user,
              "--licence-location", "/usr/share/doc/prometheus-pgbouncer-exporter/copyright"),
        secret_env=("PGPASSWORD",))


def pgbouncer_exporter_launcher() -> str:
    """The launcher's text, for backends that write it onto a host."""
    return PGBOUNCER_EXPORTER_LAUNCHER.read_text(encoding="utf-8")


@dataclass(frozen=True)
class ScrapeTarget:
    """One exporter: which job scrapes it, where, and the labels that name the node."""

    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)


def local_targets(cfg: PlatformConfig) -> list[ScrapeTarget]:
    """The local stack's exporters: the primary's port, then one more per replica.

    With `ha.manager: patroni` the nodes are Patroni's members (`pg-1`, ...): the
    leader moves, so the label names the member, never a role."""
    host = cfg.postgres.listen_address
    pg_port, bouncer_port = exporter_ports(cfg)
    names = (["primary", *(f"replica-{i}" for i in range(1, cfg.replicas + 1))]
             if cfg.ha.manager != "patroni" else
             [f"pg-{i + 1}" for i in range(cfg.replicas + 1)])
    out = [ScrapeTarget("postgres", f"{host}:{pg_port + i}", {"node": name, "stack": cfg.stack})
           for i, name in enumerate(names)]
    out.append(ScrapeTarget("pgbouncer", f"{host}:{bouncer_port}",
                            {"node": "pooler", "stack": cfg.stack}))
    out.append(ScrapeTarget("pgbackrest", f"{host}:{backup_exporter_port(cfg)}",
                            {"node": "primary", "stack": cfg.stack}))
    return out


def prometheus_config(targets: Sequence[ScrapeTarget], mon: MonitoringSettings,
                      rule_files: Sequence[str] = ()) -> str:
    """prometheus.yml: one static target per exporter, labelled with its node."""
    jobs: dict[str, list[dict[str, object]]] = {}
    for t in targets:
        jobs.setdefault(t.job, []).append({"targets": [t.address],
                                           "labels": dict(sorted(t.labels.items()))})
    doc = {
        "global": {"scrape_interval": f"{mon.scrape_interval_seconds}s",
                   "evaluation_interval": f"{mon.scrape_interval_seconds}s"},
        "rule_files": list(rule_files),
        "scrape_configs": [{"job_name": job, "static_configs": static}
                           for job, static in sorted(jobs.items())],
    }
    header = ("# Rendered by pg-platform (infra/render/monitoring.py). Do not edit: "
              "re-render it from the stack.\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def alert_rules(cfg: PlatformConfig, mon: MonitoringSettings) -> str:
    """Prometheus alert rules with this stack's thresholds."""
    return render("monitoring/alerts.yml.j2", mon=mon,
                  full_backup_max_age=full_backup_max_age_seconds(mon, cfg.backup.schedule.full),
                  full_schedule=cfg.backup.schedule.full)
