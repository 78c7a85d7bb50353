"""Loopback ports for tests, below the kernel's ephemeral range.

A port the kernel hands out (`bind(0)`) lies in the ephemeral range, where any
client connection or Pulumi plugin may take it as its local port a moment
later; a throw-away stack's exporters, derived from its PostgreSQL port, lost
their port that way in CI. Ports here come from below that range, are checked
free on every address the stack binds, and are never handed out twice in one
test process, so two module fixtures picked at import time cannot collide.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from infra import config, hostctl
from infra.config.ports import service_ports
from infra.config.postgres import MAX_REPLICAS
from infra.errors import ConfigError
from infra.render.monitoring import backup_exporter_port

LOWEST = 10_000
# Clear of the local stack's own defaults (25432 .. 28433), so a test never
# takes a port a developer's `make up` stack uses.
DEFAULT_STACK = range(25_000, 29_000)
_given: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


LOOPBACK = ("127.0.0.1",)


def _usable(ports: list[int], hosts: tuple[str, ...] = LOOPBACK) -> bool:
    return all(p not in _given and p not in DEFAULT_STACK
               and all(hostctl.port_free(h, p) for h in hosts) for p in ports)


def _take(ports: list[int]) -> None:
    _given.update(ports)


def free_run(count: int = 1, hosts: tuple[str, ...] = LOOPBACK) -> int:
    """The first of `count` consecutive ports below the ephemeral range, free on every host."""
    for _ in range(500):
        port = _random.randrange(LOWEST, _ephemeral_low() - count)
        run = list(range(port, port + count))
        if _usable(run, hosts):
            _take(run)
            return port
    raise RuntimeError(f"no {count} free loopback ports below the ephemeral range")


def free_port(hosts: tuple[str, ...] = LOOPBACK) -> int:
    """One port below the ephemeral range, free on every one of `hosts`."""
    return free_run(1, hosts)


def stack_ports(base: int) -> list[int]:
    """Every port a local stack with `postgres.port = base` listens on, replicas at their most."""
    cfg = config.load({"postgres": {"port": base}, "replicas": MAX_REPLICAS}, "ports")
    ports = [p for p, _ in service_ports(
        "local", MAX_REPLICAS, cfg.postgres, cfg.pooler, cfg.monitoring,
        config.exporter_ports(cfg))]
    return [*ports, backup_exporter_port(cfg)]


def stack_port(hosts: tuple[str, ...] = ()) -> int:
    """A `postgres.port` whose derived ports (replicas, pooler, exporters) are all free too.

    `hosts`: further addresses the port itself must be free on (Patroni's nodes).
    """
    top = _ephemeral_low()
    for _ in range(500):
        base = _random.randrange(LOWEST, top)
        try:
            ports = stack_ports(base)
        except ConfigError:
            continue
        replica_hosts = [f"127.0.0.{i}" for i in range(2, MAX_REPLICAS + 2)]
        if (max(ports) < top and _usable(ports)
                and all(hostctl.port_free(h, base + 1) for h in replica_hosts)
                and all(hostctl.port_free(h, base) for h in hosts)):
            _take(ports)
            return base
    raise RuntimeError("no free block of loopback ports for a throw-away stack")


class HaPorts(NamedTuple):
    """The ports of a Patroni stack: PostgreSQL on every node, etcd, REST, HAProxy, PgBouncer."""

    postgres: int
    etcd_client: int
    etcd_peer: int
    restapi: int
    haproxy: int  # and haproxy + 1, the read-only port
    pooler: int


def ha_ports(hosts: tuple[str, ...]) -> HaPorts:
    """Ports free on 127.0.0.1 and every address in `hosts` (the nodes and etcd members)."""
    everywhere = (*LOOPBACK, *hosts)
    return HaPorts(postgres=stack_port(hosts), etcd_client=free_port(everywhere),
                   etcd_peer=free_port(everywhere), restapi=free_port(everywhere),
                   haproxy=free_run(2), pooler=free_port())
