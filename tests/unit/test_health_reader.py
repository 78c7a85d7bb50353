"""The health command reads every node as platform_monitor where the stack has it."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from infra import config
from infra.health.stack import StackTargets

OWNER = "host=127.0.0.1 port=5432 user=platform_owner password=o dbname=platform"
MONITOR = "host=127.0.0.1 port=5432 user=platform_monitor password=m dbname=platform"
REPLICAS = ("host=127.0.0.2 port=5433 user=app password=a dbname=platform sslmode=verify-full",)


def targets(monitor: str | None) -> StackTargets:
    cfg = config.load({"replicas": 1}, "local")
    return StackTargets(cfg=cfg, monitoring=cfg.monitoring, primary_dsn=OWNER,
                        replica_dsns=REPLICAS, pooler_admin_dsn=None, pgbackrest_config=None,
                        monitor_dsn=monitor)


def test_every_probe_reads_as_the_monitoring_role() -> None:
    t = targets(MONITOR)
    assert t.reader_dsn == MONITOR
    (replica,) = t.replica_reader_dsns
    got = conninfo_to_dict(replica)
    assert (got["user"], got["password"]) == ("platform_monitor", "m")
    assert (got["host"], got["port"], got["sslmode"]) == ("127.0.0.2", "5433", "verify-full")


def test_a_stack_without_the_monitoring_role_reads_as_before() -> None:
    t = targets(None)
    assert t.reader_dsn == OWNER and t.replica_reader_dsns == REPLICAS
