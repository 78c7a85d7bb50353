"""Every port a stack's services listen on, and the collisions among them.

`pooler.port` equal to `postgres.port` took PgBouncer down halfway through an
`up`; the same with an exporter or a replica's port. Each service's port is
listed with the key that sets it, so a collision names both keys, before any
resource exists. Only the local and docker backends put every service on
this machine's loopback; on aws each service has a host of its own, so only
ports on one host are compared.
"""

from __future__ import annotations

from infra.config.ha import HaSettings
from infra.config.monitoring import MonitoringSettings
from infra.config.pooler import PoolerSettings
from infra.config.postgres import PostgresSettings
from infra.config.section import key
from infra.errors import ConfigError


def service_ports(backend: str, replicas: int, postgres: PostgresSettings,
                  pooler: PoolerSettings, monitoring: MonitoringSettings,
                  exporters: tuple[int, int]) -> list[tuple[int, str]]:
    """(port, what sets it) for each listening service of the stack."""
    pg = postgres.port
    out = [(pg, key("postgres.port"))]
    if backend == "local" and replicas:
        out.append((pg + 1, f"{key('postgres.port')} + 1 (the replicas' port)"))
    elif backend == "docker":
        out += [(pg + i, f"{key('postgres.port')} + {i} (replica-{i}'s published port)")
                for i in range(1, replicas + 1)]
    if monitoring.exporters and backend == "local":
        pg_exp, bouncer_exp = exporters
        name = key("monitoring.postgres_exporter_port")
        out.append((pg_exp, f"{name} (the primary's exporter)"))
        out += [(pg_exp + i, f"{name} + {i} (replica-{i}'s exporter)")
                for i in range(1, replicas + 1)]
        out.append((bouncer_exp, key("monitoring.pgbouncer_exporter_port")))
    # Last, so that a collision names the key most often set by hand.
    out.append((pooler.port, key("pooler.port")))
    return out


def check_collisions(ports: list[tuple[int, str]]) -> None:
    seen: dict[int, str] = {}
    for port, what in ports:
        if port in seen:
            raise ConfigError(f"{what}={port}: collides with {seen[port]}={port}; every "
                              "service of the stack needs a port of its own")
        seen[port] = what


def ha_ports(backend: str, ha: HaSettings, postgres: PostgresSettings,
             pooler: PoolerSettings) -> list[list[tuple[int, str]]]:
    """With `ha.manager: patroni`, the groups of ports that share an address: on each
    database host (or local node address) PostgreSQL, Patroni's REST API and etcd; on the
    local stack's listen address HAProxy's two ports and PgBouncer. Else none."""
    if ha.manager != "patroni":
        return []
    node = [(postgres.port, key("postgres.port")), (ha.restapi_port, key("ha.restapi_port")),
            (ha.etcd_client_port, key("ha.etcd_client_port")),
            (ha.etcd_peer_port, key("ha.etcd_peer_port"))]
    if backend != "local":
        return [node]
    front = [(ha.haproxy_port, key("ha.haproxy_port")),
             (ha.haproxy_port + 1, f"{key('ha.haproxy_port')} + 1 (HAProxy's read-only port)"),
             (pooler.port, key("pooler.port"))]
    return [node, front]
