"""The prod stack's DSN outputs (infra/backends/aws.py), every one `verify-full`.

Without Patroni the first host is the primary and runs the pooler. With it any host may
lead and every host runs a PgBouncer, so the DSNs list every host (libpq's multi-host
form) and let libpq find the right one; `connect_timeout` bounds each host's try,
because a dead EC2 host drops SYNs instead of refusing them.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra import dsn
from infra.backends import aws_ha
from infra.config import PlatformConfig

POOLER_CONNECT_TIMEOUT = 5   # seconds per host of a multi-host DSN


def server_dsn(host: pulumi.Input[str], port: int, user: str, password: pulumi.Input[str],
         database: str, ca_file: str) -> pulumi.Output[str]:
    """Clients verify the server's certificate and address against the stack's CA."""
    return dsn.output(host=host, port=port, user=user, password=password, dbname=database,
                      sslmode="verify-full", sslrootcert=ca_file)


def pooler_dsn(cfg: PlatformConfig, hosts: pulumi.Output[str], user: str,
                password: pulumi.Input[str], database: str, ca_file: str) -> pulumi.Output[str]:
    """A pooler DSN; with several hosts also `connect_timeout`, which libpq applies per
    host: a dead EC2 host drops the SYN rather than refusing it, and without a timeout
    libpq would wait out the kernel's TCP retries (minutes) before it tries the next."""
    timeout = POOLER_CONNECT_TIMEOUT if aws_ha.enabled(cfg) else None
    return dsn.output(host=hosts, port=cfg.pooler.port, user=user, password=password,
                      dbname=database, sslmode="verify-full", sslrootcert=ca_file,
                      connect_timeout=timeout)


def pooler_hosts(cfg: PlatformConfig, ips: list[pulumi.Output[str]]) -> pulumi.Output[str]:
    """The `host` of the pooler DSNs. Without Patroni: the primary's address. With it:
    every host's, comma-joined (libpq's multi-host form), because every host runs a
    PgBouncer that reaches the leader through its own HAProxy; libpq tries them in order,
    so `target_session_attrs=any` is right, and under verify-full it checks each host's
    certificate against the address it dialled, which that host's names (cert_hosts)."""
    chosen = ips if aws_ha.enabled(cfg) else ips[:1]
    return pulumi.Output.all(*chosen).apply(",".join)


class ServerDsns:
    """The DSNs that dial PostgreSQL itself (no pooler). Without Patroni the primary is
    the first host, the replicas the others. With it any host may lead: each DSN lists
    every host, and libpq picks by role, `target_session_attrs=read-write` (the leader:
    the schema step, HostsConverged, migrations after a failover) or `prefer-standby` (one
    replica DSN: a standby, the leader when none is up), with the per-host timeout."""

    def __init__(self, cfg: PlatformConfig, ips: list[pulumi.Output[str]], ca_file: str) -> None:
        self.cfg, self.ips, self.ca_file = cfg, ips, ca_file
        self.ha = aws_ha.enabled(cfg)
        self.every = pulumi.Output.all(*ips).apply(",".join)

    def _multi(self, user: str, password: pulumi.Input[str], attrs: str) -> pulumi.Output[str]:
        pg = self.cfg.postgres
        return dsn.output(host=self.every, port=pg.port, user=user, password=password,
                          dbname=pg.database, sslmode="verify-full", sslrootcert=self.ca_file,
                          connect_timeout=POOLER_CONNECT_TIMEOUT, target_session_attrs=attrs)

    def primary(self, user: str, password: pulumi.Input[str]) -> pulumi.Output[str]:
        if self.ha:
            return self._multi(user, password, "read-write")
        pg = self.cfg.postgres
        return server_dsn(self.ips[0], pg.port, user, password, pg.database, self.ca_file)

    def replicas(self, user: str, password: pulumi.Input[str]) -> pulumi.Output[Any]:
        pg = self.cfg.postgres
        dsns = ([self._multi(user, password, "prefer-standby")] if self.ha else
                [server_dsn(ip, pg.port, user, password, pg.database, self.ca_file)
                 for ip in self.ips[1:]])
        return pulumi.Output.secret(pulumi.Output.all(*dsns))
