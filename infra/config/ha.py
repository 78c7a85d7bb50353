"""The `ha` section: who manages PostgreSQL, and Patroni's durability and timing.

`manager: patroni` hands every node's PostgreSQL to Patroni with etcd as its
store; `manager: none` keeps the hand-supervised path (pg_ctl, pg_basebackup).
Timing follows Patroni's own rule, `loop_wait + 2 * retry_timeout <= ttl`: a
leader must be able to retry the store twice within one leader-key lifetime,
or it demotes itself while healthy.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config.section import Section
from infra.errors import ConfigError

MANAGERS = ("none", "patroni")
SYNCHRONOUS = ("off", "on", "strict")
ETCD_MEMBERS = 3


@dataclass(frozen=True)
class HaSettings:
    manager: str = "none"
    synchronous: str = "off"
    maximum_lag_on_failover: int = 1048576  # bytes; Patroni's default (1 MiB)
    ttl: int = 20
    loop_wait: int = 5
    retry_timeout: int = 5
    etcd_client_port: int = 2379   # each member on its own loopback address (local stack)
    etcd_peer_port: int = 2380
    restapi_port: int = 8008       # Patroni's REST API, one per node address
    haproxy_port: int = 5000       # read-write through HAProxy; read-only is this + 1

    @property
    def synchronous_mode(self) -> bool:
        """Patroni's `synchronous_mode`: on for both `on` and `strict`."""
        return self.synchronous in ("on", "strict")

    @property
    def synchronous_mode_strict(self) -> bool:
        """Strict refuses writes when no synchronous standby is left, rather than going async."""
        return self.synchronous == "strict"


def parse_ha(sec: Section) -> HaSettings:
    manager = sec.choice("manager", "none", MANAGERS)
    synchronous = sec.get("synchronous", "off")
    # YAML reads a bare on/off as a boolean; accept that spelling too.
    if synchronous is True:
        synchronous = "on"
    elif synchronous is False:
        synchronous = "off"
    if synchronous not in SYNCHRONOUS:
        raise ConfigError(f"{sec.where('synchronous')}={synchronous!r}: allowed values are "
                          f"{', '.join(SYNCHRONOUS)}")
    lag = sec.int("maximum_lag_on_failover", 1048576, 0, 1 << 40)
    ttl = sec.int("ttl", 20, 20, 3600)
    loop_wait = sec.int("loop_wait", 5, 1, 3600)
    retry_timeout = sec.int("retry_timeout", 5, 1, 3600)
    if loop_wait + 2 * retry_timeout > ttl:
        raise ConfigError(
            f"{sec.where('ttl')}={ttl}: Patroni needs loop_wait + 2 * retry_timeout <= ttl, "
            f"here {sec.where('loop_wait')}={loop_wait} + 2 * "
            f"{sec.where('retry_timeout')}={retry_timeout} = {loop_wait + 2 * retry_timeout}; "
            f"raise ttl to at least {loop_wait + 2 * retry_timeout} or lower the others")
    if 2 * loop_wait >= ttl:
        # Patroni renews a member's etcd lease only when loop_wait has passed since the
        # last renewal; a member woken early (the leader's status changed) skips it, so
        # renewals can be up to 2 * loop_wait apart. Measured here with ttl 20, loop_wait
        # 16: the replicas' member keys expired every other loop and the synchronous
        # standby was dropped each time, which also blocks automatic failover.
        raise ConfigError(
            f"{sec.where('loop_wait')}={loop_wait}: Patroni's etcd lease can go "
            f"2 * loop_wait = {2 * loop_wait} s unrenewed, which must stay below "
            f"{sec.where('ttl')}={ttl}; use loop_wait <= {(ttl - 1) // 2} or raise ttl")
    ports = {name: sec.int(name, default, 1024, 65534) for name, default in (
        ("etcd_client_port", 2379), ("etcd_peer_port", 2380), ("restapi_port", 8008),
        ("haproxy_port", 5000))}
    if ports["etcd_client_port"] == ports["etcd_peer_port"]:
        raise ConfigError(f"{sec.where('etcd_peer_port')}={ports['etcd_peer_port']}: must "
                          f"differ from {sec.where('etcd_client_port')}")
    settings = HaSettings(manager=manager, synchronous=str(synchronous),
                          maximum_lag_on_failover=lag, ttl=ttl, loop_wait=loop_wait,
                          retry_timeout=retry_timeout, **ports)
    sec.finish()
    return settings
