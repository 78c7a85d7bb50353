"""Tenants: slug rules, the registry contract, and migrating many schemas at once.

The registry is SQL the project owns (``sql/schema``), and the engine relies
on a small contract with it, so that users can replace the reference schema:

* a table ``public.tenants`` with columns ``slug``, ``name``,
  ``subscription_plan``, ``schema_name`` and ``is_active``;
* a function ``public.create_tenant(slug text, name text, plan text)`` that
  registers a tenant or updates its name and plan. Applications call the same
  function to add tenants at run time; the next ``apply`` creates their schemas.

Tenant schemas migrate in parallel over a small, bounded set of connections
(one per worker), each tenant's files in order, each file in its own
transaction. The first failure stops new work; tenants already running finish.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from infra.errors import ConfigError, MigrationError
from infra.schema import history, runner
from infra.schema.files import Migration

logger = logging.getLogger(__name__)

REGISTRY = "public.tenants"
SCHEMA_PREFIX = "tenant_"
SLUG_MAX = 50
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")


def validate_slug(slug: object) -> str:
    """Return `slug` if it can name a tenant and its schema safely.

    Lowercase letters, digits and underscores, starting with a letter, at most
    50 characters: the schema ``tenant_<slug>`` then needs no quoting and fits
    PostgreSQL's 63-byte identifier limit.

    :raises ConfigError: naming the value and what is allowed.
    """
    allowed = (f"1-{SLUG_MAX} characters of lowercase letters a-z, digits and '_', "
               "starting with a letter")
    if not isinstance(slug, str):
        raise ConfigError(f"tenant slug {slug!r} is not a string; expected {allowed}")
    if len(slug) > SLUG_MAX:
        raise ConfigError(f"tenant slug {slug!r} has {len(slug)} characters; "
                          f"expected {allowed}")
    if not _SLUG.match(slug):
        raise ConfigError(f"tenant slug {slug!r} is invalid; expected {allowed}")
    return slug


def schema_for(slug: str) -> str:
    """The schema a tenant's tables live in; the registry computes the same."""
    return SCHEMA_PREFIX + validate_slug(slug)


class TenantLike(Protocol):
    """Anything with a slug, a name and a plan (stack config's Tenant fits)."""

    @property
    def slug(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def plan(self) -> str: ...


@dataclass(frozen=True)
class TenantSpec:
    slug: str
    name: str
    plan: str = "standard"

    def __post_init__(self) -> None:
        validate_slug(self.slug)

    @classmethod
    def of(cls, t: TenantLike | Mapping[str, str]) -> TenantSpec:
        if isinstance(t, Mapping):
            return cls(slug=t["slug"], name=t.get("name", t["slug"]),
                       plan=t.get("plan", "standard"))
        return cls(slug=t.slug, name=t.name, plan=t.plan)


def register(conn: psycopg.Connection[Any], tenants: Sequence[TenantSpec]) -> None:
    """Register or update config tenants, as the owner role.

    Not through ``create_tenant``: that function is tenant_admin's, for run-time
    tenants, and never updates an existing tenant (sql/schema/V0005).
    """
    if not tenants:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.tenants AS t (slug, name, subscription_plan) "
            "VALUES (%s, %s, %s) ON CONFLICT (slug) DO UPDATE "
            "SET name = EXCLUDED.name, subscription_plan = EXCLUDED.subscription_plan "
            "WHERE (t.name, t.subscription_plan) IS DISTINCT FROM "
            "(EXCLUDED.name, EXCLUDED.subscription_plan)",
            [(t.slug, t.name, t.plan) for t in tenants])
    logger.info("registered %d tenant(s): %s", len(tenants),
                ", ".join(t.slug for t in tenants))


@dataclass(frozen=True)
class TenantWork:
    """What one tenant schema lacks, in the order it must be applied."""

    slug: str
    schema: str
    schema_exists: bool
    pending: tuple[Migration, ...]
    stale_history: bool = False  # the schema was migrated once and has been dropped


@dataclass(frozen=True)
class TenantOutcome:
    schema: str
    applied: tuple[str, ...]
    created: bool


def migrate(dsn: str, work: Sequence[TenantWork], values: Mapping[str, str],
            history_schema: str, workers: int,
            on_progress: Callable[[int, int], None] | None = None,
            tenant_values: Callable[[str], Mapping[str, str]] | None = None
            ) -> list[TenantOutcome]:
    """Bring every tenant in `work` up to date over at most `workers` connections.

    :param tenant_values: more placeholder values for one tenant, by slug (the
        engine gives ``tenant_verifier``, the tenant role's SCRAM verifier).

    :raises MigrationError: the first tenant failure (its message names the
        file, line and tenant schema); tenants finished before it stay migrated.
    """
    if not work:
        return []
    queue = list(reversed(work))
    guard = threading.Lock()
    outcomes: list[TenantOutcome] = []
    failures: list[BaseException] = []
    total = len(work)

    def next_item() -> TenantWork | None:
        with guard:
            return queue.pop() if queue and not failures else None

    def worker() -> None:
        try:
            conn = runner.connect(dsn, "tenant migrations")
        except BaseException as exc:
            with guard:
                failures.append(exc)
            return
        with conn:
            while (item := next_item()) is not None:
                try:
                    outcome = _migrate_one(conn, item, values, history_schema, tenant_values)
                except BaseException as exc:
                    with guard:
                        failures.append(exc)
                    return
                with guard:
                    outcomes.append(outcome)
                    done = len(outcomes)
                if on_progress:
                    on_progress(done, total)

    threads = [threading.Thread(target=worker, name=f"tenant-migrate-{i}", daemon=True)
               for i in range(max(1, min(workers, total)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        first = failures[0]
        if isinstance(first, MigrationError):
            raise MigrationError(f"{first} ({len(outcomes)} of {total} tenant(s) "
                                 "were migrated before the failure)") from first
        raise first
    return outcomes


def _migrate_one(conn: psycopg.Connection[Any], item: TenantWork, values: Mapping[str, str],
                 history_schema: str,
                 more_values: Callable[[str], Mapping[str, str]] | None = None
                 ) -> TenantOutcome:
    tenant_values = {**values, "tenant_schema": item.schema, "tenant_slug": item.slug,
                     **(more_values(item.slug) if more_values and item.pending else {})}
    # A new schema is created inside its first migration's transaction, so a
    # failing template leaves no empty schema behind.
    prelude: sql.Composed | None = None
    if not item.schema_exists:
        prelude = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(item.schema))
        if item.stale_history:
            # Recreated after a manual drop: its old rows describe objects that are gone.
            logger.warning("tenant schema %s is missing; recreating it from the tenant track",
                           item.schema)
            prelude = sql.SQL("{}; DELETE FROM {} WHERE track = 'tenant' AND tenant_schema = {}"
                              ).format(prelude, history.table(history_schema),
                                       sql.Literal(item.schema))
    # One WAL flush per tenant, as when it had one file: its files but the last commit
    # without waiting for it, and the last one's flush makes them all durable.
    for i, m in enumerate(item.pending):
        runner.run(conn, m, tenant_values, history_schema, tenant_schema=item.schema,
                   prelude=prelude, durable=i == len(item.pending) - 1)
        prelude = None
    return TenantOutcome(item.schema, tuple(m.ref for m in item.pending),
                         not item.schema_exists)
