"""`pg-platform:pooler`: PgBouncer in front of the cluster.

The pooler is sized against the cluster here, before any resource exists: a
pool that could not get its server connections is rejected with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config.names import role_name
from infra.config.postgres import PostgresSettings
from infra.config.section import Section
from infra.errors import ConfigError

# PgBouncer keeps this many of the primary's connections free for direct use
# (migrations, pgBackRest, monitoring) when sizing pools against max_connections.
DIRECT_CONNECTION_HEADROOM = 5
# The pooler's port when left unset: postgres.port + this (PgBouncer's own 6432
# for the usual 5432), or FALLBACK_PORT when that passes 65535.
PORT_OFFSET = 1000
FALLBACK_PORT = 6432
_DAY = 86400


@dataclass(frozen=True)
class PoolerSettings:
    """PgBouncer in front of the cluster; defaults are PgBouncer's except where noted."""

    port: int = FALLBACK_PORT
    pool_mode: str = "transaction"
    default_pool_size: int = 20
    min_pool_size: int = 0
    reserve_pool_size: int = 0
    reserve_pool_timeout: int = 5
    max_client_conn: int = 1100  # 1,000 app clients plus console, exporter, health
    max_db_connections: int = 0
    server_idle_timeout: int = 600
    server_lifetime: int = 3600
    server_connect_timeout: int = 15
    # After a failed server login PgBouncer waits this long before the next try; with
    # Patroni a new leader is reachable a second after promotion, so HA stacks lower it.
    server_login_retry: float = 15
    query_wait_timeout: int = 120
    client_idle_timeout: int = 0
    idle_transaction_timeout: int = 0
    admin_user: str = "pgbouncer_admin"
    log_connections: bool = False

    @property
    def server_connections_per_pool(self) -> int:
        """The most server connections one pool may open, reserve included."""
        most = self.default_pool_size + self.reserve_pool_size
        return min(most, self.max_db_connections) if self.max_db_connections else most


def default_port(pg: PostgresSettings) -> int:
    return pg.port + PORT_OFFSET if pg.port + PORT_OFFSET <= 65535 else FALLBACK_PORT


def parse_pooler(sec: Section, pg: PostgresSettings) -> PoolerSettings:
    """PgBouncer settings, checked against the primary's connection limits."""
    d = PoolerSettings()
    settings = PoolerSettings(
        port=sec.int("port", default_port(pg), 1024, 65535),
        pool_mode=sec.choice("pool_mode", d.pool_mode, ("session", "transaction", "statement")),
        default_pool_size=sec.int("default_pool_size", d.default_pool_size, 1, 10000),
        min_pool_size=sec.int("min_pool_size", d.min_pool_size, 0, 10000),
        reserve_pool_size=sec.int("reserve_pool_size", d.reserve_pool_size, 0, 10000),
        reserve_pool_timeout=sec.int("reserve_pool_timeout", d.reserve_pool_timeout, 0, 3600),
        max_client_conn=sec.int("max_client_conn", d.max_client_conn, 1, 100000),
        max_db_connections=sec.int("max_db_connections", d.max_db_connections, 0, 10000),
        server_idle_timeout=sec.int("server_idle_timeout", d.server_idle_timeout, 0, _DAY),
        server_lifetime=sec.int("server_lifetime", d.server_lifetime, 0, _DAY),
        server_connect_timeout=sec.int("server_connect_timeout", d.server_connect_timeout,
                                       1, 3600),
        server_login_retry=sec.seconds("server_login_retry", d.server_login_retry, 0.1, 3600),
        query_wait_timeout=sec.int("query_wait_timeout", d.query_wait_timeout, 0, _DAY),
        client_idle_timeout=sec.int("client_idle_timeout", d.client_idle_timeout, 0, _DAY),
        idle_transaction_timeout=sec.int("idle_transaction_timeout",
                                         d.idle_transaction_timeout, 0, _DAY),
        admin_user=role_name(sec.where("admin_user"), sec.ident("admin_user", d.admin_user)),
        log_connections=sec.flag("log_connections", d.log_connections),
    )
    sec.finish()
    if settings.admin_user in (pg.owner_role, pg.app_role, pg.replication_role, "postgres"):
        raise ConfigError(f"{sec.where('admin_user')}={settings.admin_user!r}: the console "
                          "user must differ from the owner, app and replication roles and "
                          "from 'postgres'")
    if settings.min_pool_size > settings.default_pool_size:
        raise ConfigError(f"{sec.where('min_pool_size')}={settings.min_pool_size} exceeds "
                          f"{sec.where('default_pool_size')}={settings.default_pool_size}")
    _check_fits(sec, settings, pg)
    return settings


def _check_fits(sec: Section, pooler: PoolerSettings, pg: PostgresSettings) -> None:
    """One pool (the app role's) per database entry; it must fit beside direct connections.

    Replicas run with the primary's max_connections (a hot standby requires at
    least that), so the same limit holds for the read-only entry.
    """
    room = pg.max_connections - pg.superuser_reserved_connections - DIRECT_CONNECTION_HEADROOM
    need = pooler.server_connections_per_pool
    if need <= room:
        return
    parts = f"{sec.where('default_pool_size')}={pooler.default_pool_size}"
    if pooler.reserve_pool_size:
        parts += f" + reserve_pool_size={pooler.reserve_pool_size}"
    if pooler.max_db_connections:
        parts += f" (capped by max_db_connections={pooler.max_db_connections})"
    raise ConfigError(
        f"{parts} = {need} server connections per pool do not fit in "
        f"pg-platform:postgres.max_connections={pg.max_connections} minus "
        f"superuser_reserved_connections={pg.superuser_reserved_connections} minus "
        f"{DIRECT_CONNECTION_HEADROOM} kept for direct connections (migrations, backups, "
        f"monitoring) = {room}; lower the pool or raise max_connections")
