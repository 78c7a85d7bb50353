"""Prometheus exporters as processes on this machine, run by a dynamic provider.

The local stack runs Debian's prometheus-postgres-exporter (one per node) and
prometheus-pgbouncer-exporter (one for the pooler) on loopback ports, with
the commands and custom queries that infra/render/monitoring.py renders for
every backend, logging in as platform_monitor (pg_monitor only), and a backup
collector (monitoring/pgbackrest_exporter.py). Secrets (the database and console
passwords) reach the process only through 0600 files owned by the service user (`secret_files`: the
exporter's DATA_SOURCE_PASS_FILE, libpq's PGPASSFILE), never its environment,
its argv, the state's plain fields or a log.

Like local_postgres, this module is pickled by reference into the state: it
must import without side effects, keep its path, and bump PROVIDER_VERSION
when behaviour changes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra.backends.local_layout import layout, replicas
from infra.config import PlatformConfig
from infra.hostctl.exporter import pid_file, running_pid, start, stop
from infra.render import monitoring as rm
from infra.render.passfile import pgpass_line
from infra.resource_types import keep_urn
from infra.roles import MONITOR
from infra.schema.files import MigrationSet

logger = logging.getLogger(__name__)

PROVIDER_VERSION = "4"


class ExporterProvider(ResourceProvider):
    """One exporter process: its files, its command and whether it runs."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        stop(props)  # a leftover of an interrupted run must not hold the port
        start(props)
        return CreateResult(id_=str(pid_file(props)), outs={**props, "running": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Refresh notices an exporter that died or was stopped by hand."""
        return ReadResult(id_=id_, outs={**props, "running": running_pid(props) is not None})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in news if k != "running" and olds.get(k) != news.get(k)]
        stopped = olds.get("running") is False
        replaces = [k for k in ("name", "run_dir") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed) or stopped, replaces=replaces,
                          delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        stop(olds)
        start(news)
        return UpdateResult(outs={**news, "running": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        stop(props)
        for path in [*(props.get("files") or {}), *(props.get("secret_files") or {})]:
            Path(path).unlink(missing_ok=True)


class Exporter(Resource, module="local", name="Exporter"):
    """A local exporter; `secret_files` (and any `secret_env`) stay secret."""

    def __init__(self, name: str, props: dict[str, Any],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(ExporterProvider(), name,
                         {**props,
                          "secret_env": pulumi.Output.secret(props.get("secret_env") or {}),
                          "secret_files": pulumi.Output.secret(props.get("secret_files") or {}),
                          "running": None, "provider_version": PROVIDER_VERSION},
                         keep_urn(opts, secret=["secret_env", "secret_files"]))


def _exporter_uri(host: str, port: int, database: str, ca_file: str) -> str:
    """DATA_SOURCE_URI: no user, no password. lib/pq verifies the server's certificate and
    name against the stack's CA (pg_hba admits hostssl only)."""
    return (f"{host}:{port}/{quote(database, safe='')}"
            f"?sslmode=verify-full&sslrootcert={quote(ca_file, safe='/')}")


def _pgpass(host: str, port: int, user: str, password: Any) -> Any:
    """A libpq passfile line; an Output when the password is one."""
    if isinstance(password, str):
        return pgpass_line(host, port, user, password)
    return pulumi.Output.from_input(password).apply(
        lambda pw: pgpass_line(host, port, user, pw))


def exporter_props(cfg: PlatformConfig, *, monitor_password: Any, admin_password: Any,
                   sql_dir: Path,
                   nodes: list[tuple[str, str, int]] | None = None) -> list[dict[str, Any]]:
    """Inputs of every exporter of the local stack; passwords may be Outputs or strings.

    One postgres exporter per node, logging in as platform_monitor (roles.MONITOR:
    pg_monitor and read grants only, never a superuser) over verify-full TLS, its
    password in a 0600 file; one for the pooler's console; and the backup collector,
    which runs `pgbackrest info` as the service user (no login, no secret). Ports are
    infra.render.monitoring's. The queries carry the stack's sql/ files, so after a
    deploy the exporter reports what the database still lacks. `nodes` (name, host,
    port) replaces the hand-supervised primary and replicas: Patroni's members.
    """
    mon = cfg.monitoring
    if not mon.exporters:
        return []
    pg, lay = cfg.postgres, layout(cfg)
    run_dir = lay.base / "exporters"
    queries_path = str(run_dir / "queries.yaml")
    queries = rm.postgres_exporter_queries(cfg, MigrationSet.load(sql_dir))
    targets = {(t.job, t.labels["node"]): t for t in rm.local_targets(cfg)}
    if nodes is None:
        nodes = [("primary", pg.listen_address, pg.port)]
        nodes += [(r.name, r.host, r.port) for r in replicas(cfg)]
    first = nodes[0][0]
    # The query file is shared: the primary's exporter writes it, and the others
    # carry only its digest (they restart when it changes), so a preview shows it once.
    shared = {queries_path: hashlib.sha256(queries.encode()).hexdigest()}
    out: list[dict[str, Any]] = []
    for node, host, port in nodes:
        listen, _, exporter_port = targets[("postgres", node)].address.rpartition(":")
        cmd = rm.postgres_exporter_command(listen, int(exporter_port), queries_path)
        pass_file = str(run_dir / "secrets" / f"{node}.password")
        out.append({"name": f"postgres-exporter-{node}", "run_dir": str(run_dir),
                    "argv": list(cmd.argv), "listen": listen, "port": int(exporter_port),
                    **({"files": {queries_path: queries}} if node == first
                       else {"files": {}, "shared_files": shared}),
                    "env": {"DATA_SOURCE_URI": _exporter_uri(host, port, pg.database,
                                                             lay.tls.ca_file),
                            "DATA_SOURCE_USER": MONITOR,
                            "DATA_SOURCE_PASS_FILE": pass_file},
                    "secret_files": {pass_file: monitor_password}})
    listen, _, exporter_port = targets[("pgbouncer", "pooler")].address.rpartition(":")
    launcher = str(run_dir / "pgbouncer_exporter.py")
    passfile = str(run_dir / "secrets" / "pgbouncer.pgpass")
    cmd = rm.pgbouncer_exporter_command(listen, int(exporter_port), pg.listen_address,
                                        cfg.pooler.port, cfg.pooler.admin_user, launcher)
    out.append({"name": "pgbouncer-exporter", "run_dir": str(run_dir), "argv": list(cmd.argv),
                "listen": listen, "port": int(exporter_port),
                "files": {launcher: rm.pgbouncer_exporter_launcher()},
                "env": {"PGPASSFILE": passfile},
                "secret_files": {passfile: _pgpass(pg.listen_address, cfg.pooler.port,
                                                   cfg.pooler.admin_user, admin_password)}})
    listen, _, exporter_port = targets[("pgbackrest", "primary")].address.rpartition(":")
    collector = str(run_dir / "pgbackrest_exporter.py")
    cmd = rm.pgbackrest_exporter_command(listen, int(exporter_port), str(lay.pgbackrest_conf),
                                         cfg.backup.stanza, collector)
    out.append({"name": "pgbackrest-exporter", "run_dir": str(run_dir), "argv": list(cmd.argv),
                "listen": listen, "port": int(exporter_port),
                "files": {collector: rm.pgbackrest_exporter_launcher()}, "env": {}})
    return out


def build(cfg: PlatformConfig, *, monitor_password: pulumi.Input[str],
          admin_password: pulumi.Input[str], sql_dir: Path,
          opts: pulumi.ResourceOptions,
          nodes: list[tuple[str, str, int]] | None = None) -> list[Exporter]:
    """The local stack's exporters as resources (see exporter_props)."""
    made: list[Exporter] = []
    for props in exporter_props(cfg, monitor_password=monitor_password,
                                admin_password=admin_password, sql_dir=sql_dir, nodes=nodes):
        # Exporters that read a shared file start after the one that writes it.
        after = ([made[0]] if props.get("shared_files") and made else [])
        made.append(Exporter(props["name"], props, pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=after))))
    return made

