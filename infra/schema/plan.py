"""What is pending: compare the files with the history, in a fixed few round trips.

However many tenants there are, the survey costs the same: one query for the
history of the once-per-database tracks, one for which stack-config tenants
are missing from the registry, one that finds, for every active tenant at
once, which tenant files it lacks or has applied with another checksum, and
one for tenant versions applied but no longer on disk. They go out together
in one pipeline, so a no-op pass over thousands of tenants is one round trip
after an existence check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from infra.schema import history
from infra.schema.files import VERSION_SQL, Kind, Migration, MigrationSet, Track
from infra.schema.history import Applied
from infra.schema.tenants import REGISTRY, TenantSpec, TenantWork, schema_for


@dataclass(frozen=True)
class Mismatch:
    """An applied versioned file whose content changed since."""

    ref: str
    recorded: str
    current: str
    tenant_schema: str | None = None

    def describe(self) -> str:
        where = f" (tenant schema {self.tenant_schema})" if self.tenant_schema else ""
        return (f"{self.ref}{where} was edited after it was applied: recorded checksum "
                f"{self.recorded}, file checksum {self.current}")


@dataclass
class Plan:
    migrations: MigrationSet
    history_exists: bool
    registry_exists: bool
    history_schema: str = "pgplatform"
    applied: dict[tuple[Track, str], Applied] = field(default_factory=dict)
    schema_pending: list[Migration] = field(default_factory=list)
    policies_pending: list[Migration] = field(default_factory=list)
    unregistered: list[TenantSpec] = field(default_factory=list)
    tenant_work: list[TenantWork] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    unknown: list[tuple[Track, str, str]] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    engine_version: int = 0
    engine_pending: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # file refusals, set by the engine

    @property
    def is_noop(self) -> bool:
        return not (self.schema_pending or self.policies_pending or self.unregistered
                    or self.tenant_work or self.engine_pending)

    @property
    def missing_schemas(self) -> list[TenantWork]:
        """Tenant schemas that were migrated once and are gone (dropped by hand)."""
        return [w for w in self.tenant_work if w.stale_history]

    def pending_files(self) -> list[Migration]:
        """Each file `apply` would run, once (a tenant file once for all tenants)."""
        seen: dict[str, Migration] = {}
        for m in (*self.schema_pending, *(m for w in self.tenant_work for m in w.pending),
                  *self.policies_pending):
            seen.setdefault(m.ref, m)
        return list(seen.values())

    def problems(self) -> list[str]:
        """What stops `apply` and `validate`, one line each."""
        out: list[str] = []
        if self.engine_version > history.ENGINE_VERSION:
            out.append(history.too_new(self.history_schema, self.engine_version))
        out += self.refused
        out += [m.describe() for m in self.mismatches[:20]]
        if len(self.mismatches) > 20:
            out.append(f"... and {len(self.mismatches) - 20} more checksum mismatches")
        out += [f"{label} was applied but its file is missing from the sql folder; "
                "restore it, or run repair to forget it" for _, _, label in self.unknown]
        out += [f"{ref} is pending but a later version is already applied; "
                "out-of-order migrations are refused (renumber it)" for ref in self.out_of_order]
        return out


def survey(conn: psycopg.Connection[Any], ms: MigrationSet, tenants: Sequence[TenantSpec],
           history_schema: str) -> Plan:
    """Compute the plan for one database (read-only; takes no lock)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL, "
                       "to_regclass(%s) IS NOT NULL",
                       (history.regclass_name(history_schema), REGISTRY,
                        history.engine_regclass_name(history_schema))).fetchone()
    assert row is not None
    plan = Plan(ms, history_exists=bool(row[0]), registry_exists=bool(row[1]),
                history_schema=history_schema)
    if row[2]:
        got = conn.execute(history.engine_version_query(history_schema)).fetchone()
        plan.engine_version = int(got[0]) if got else 0
    elif plan.history_exists:
        plan.engine_version = 1  # written by an engine from before versioned metadata
    if plan.history_exists:
        plan.engine_pending = history.pending_engine_migrations(plan.engine_version)
    ev = plan.engine_version
    versions = [m.version for m in ms.tenant]
    sums = [m.checksum for m in ms.tenant]
    legacy = [m.legacy_checksum for m in ms.tenant]
    cfg = [[t.slug for t in tenants], [t.name for t in tenants], [t.plan for t in tenants]]

    with conn.cursor() as c_hist, conn.cursor() as c_cfg, conn.cursor() as c_ten, \
            conn.cursor() as c_unk:
        with conn.pipeline():
            if plan.history_exists:
                c_hist.execute(history.database_rows(history_schema, ev))
            if plan.registry_exists and tenants:
                c_cfg.execute(_UNREGISTERED, cfg)
            if plan.registry_exists and plan.history_exists and versions:
                c_ten.execute(_TENANTS.format(hist=history.table(history_schema),
                                              v=sql.SQL(VERSION_SQL),
                                              cv=history.checksum_version_column(ev)),
                              {"v": versions, "c": sums, "l": legacy})
            if plan.history_exists:
                c_unk.execute(_UNKNOWN_TENANT_VERSIONS.format(
                    hist=history.table(history_schema), v=sql.SQL(VERSION_SQL)),
                    {"v": versions})
        hist_rows = c_hist.fetchall() if plan.history_exists else []
        cfg_rows = c_cfg.fetchall() if plan.registry_exists and tenants else None
        ten_rows = c_ten.fetchall() if plan.registry_exists and plan.history_exists \
            and versions else None
        unk_rows = c_unk.fetchall() if plan.history_exists else []

    plan.applied = history.parse_applied(hist_rows)
    _once_per_database(plan, ms)
    if cfg_rows is None:
        drifted, new = {t.slug for t in tenants}, {t.slug for t in tenants}
    else:
        drifted = {str(r[0]) for r in cfg_rows}
        new = {str(r[0]) for r in cfg_rows if not r[1]}
    plan.unregistered = [t for t in tenants if t.slug in drifted]
    plan.unknown += [(Track.TENANT, str(r[0]), f"tenant version {r[0]}") for r in unk_rows]
    if ms.tenant:
        _tenant_work(plan, ms, ten_rows, conn, new)
    return plan


def _once_per_database(plan: Plan, ms: MigrationSet) -> None:
    for track, files in ((Track.SCHEMA, ms.schema), (Track.POLICIES, ms.policies)):
        pending = plan.schema_pending if track is Track.SCHEMA else plan.policies_pending
        on_disk = {m.key for m in files}
        highest_applied: tuple[int, ...] = ()
        for m in files:
            if m.kind is Kind.VERSIONED and (track, m.key) in plan.applied:
                highest_applied = max(highest_applied, m.sort_key[1])
        for m in files:
            done = plan.applied.get((track, m.key))
            if done is None:
                if m.kind is Kind.VERSIONED and m.sort_key[1] < highest_applied:
                    plan.out_of_order.append(m.ref)
                pending.append(m)
            elif not done.matches(m):
                if m.kind is Kind.REPEATABLE:
                    pending.append(m)
                else:
                    current = m.checksum if done.checksum_version >= 2 else m.legacy_checksum
                    plan.mismatches.append(Mismatch(m.ref, done.checksum, current))
        plan.unknown += [(track, key, f"{track.value}/{a.script}")
                         for (t, key), a in plan.applied.items()
                         if t is track and key not in on_disk and a.kind is Kind.VERSIONED]


def _tenant_work(plan: Plan, ms: MigrationSet, rows: list[tuple[Any, ...]] | None,
                 conn: psycopg.Connection[Any], new: set[str]) -> None:
    by_version = {m.version: m for m in ms.tenant}
    order = {m.version: i for i, m in enumerate(ms.tenant, start=1)}
    seen: set[str] = set()
    if rows is None and plan.registry_exists:
        # No history table yet: every active tenant lacks every file.
        rows = [(slug, schema, exists, [m.version for m in ms.tenant], [], [], [], None)
                for slug, schema, exists in conn.execute(_ALL_ACTIVE).fetchall()]
    for slug, schema, exists, missing, changed, recorded, legacy, max_applied in rows or []:
        seen.add(str(slug))
        if not exists:
            # Dropped by hand (or never created): recreate it from the whole tenant
            # track; its old history rows describe objects that are gone.
            plan.tenant_work.append(TenantWork(str(slug), str(schema), False, tuple(ms.tenant),
                                               stale_history=max_applied is not None))
            continue
        for version, rec, old in zip(changed, recorded, legacy, strict=True):
            m = by_version[version]
            current = m.legacy_checksum if old else m.checksum
            plan.mismatches.append(Mismatch(m.ref, str(rec), current, str(schema)))
        if missing and min(order[v] for v in missing) < (max_applied or 0):
            plan.out_of_order.append(f"{by_version[missing[0]].ref} (tenant schema {schema})")
        if missing or not exists:
            plan.tenant_work.append(TenantWork(str(slug), str(schema), bool(exists),
                                               tuple(by_version[v] for v in missing)))
    for slug in sorted(new - seen):
        plan.tenant_work.append(TenantWork(slug, schema_for(slug), False, tuple(ms.tenant)))


_UNREGISTERED = sql.SQL("""
    SELECT c.slug, t.slug IS NOT NULL
    FROM unnest(%s::text[], %s::text[], %s::text[]) AS c(slug, name, plan)
    LEFT JOIN public.tenants t ON t.slug = c.slug
    WHERE t.slug IS NULL OR t.name IS DISTINCT FROM c.name
       OR t.subscription_plan IS DISTINCT FROM c.plan""")

# For every active tenant at once: which tenant files it lacks, which it applied
# with another checksum, and the position of the latest file it has. Only
# tenants with something to do come back, so an up-to-date fleet returns 0 rows.
_TENANTS = sql.SQL("""
    WITH f AS (SELECT * FROM unnest(%(v)s::text[], %(c)s::text[], %(l)s::text[])
                             WITH ORDINALITY AS f(version, checksum, legacy, ord)),
         h AS (SELECT tenant_schema, {v} AS version, checksum, {cv} AS cv FROM {hist}
               WHERE track = 'tenant' AND kind = 'versioned' AND success)
    SELECT t.slug, t.schema_name, n.oid IS NOT NULL,
           coalesce(array_agg(f.version ORDER BY f.ord) FILTER (WHERE h.version IS NULL),
                    '{{}}'),
           coalesce(array_agg(f.version ORDER BY f.ord) FILTER (WHERE h.checksum <> x.want),
                    '{{}}'),
           coalesce(array_agg(h.checksum ORDER BY f.ord) FILTER (WHERE h.checksum <> x.want),
                    '{{}}'),
           coalesce(array_agg(h.cv < 2 ORDER BY f.ord) FILTER (WHERE h.checksum <> x.want),
                    '{{}}'),
           max(f.ord) FILTER (WHERE h.version IS NOT NULL)
    FROM public.tenants t
    CROSS JOIN f
    LEFT JOIN h ON h.tenant_schema = t.schema_name AND h.version = f.version
    CROSS JOIN LATERAL (SELECT CASE WHEN h.cv < 2 THEN f.legacy ELSE f.checksum END) x(want)
    LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
    WHERE t.is_active
    GROUP BY t.slug, t.schema_name, n.oid
    HAVING n.oid IS NULL OR bool_or(h.version IS NULL OR h.checksum <> x.want)
    ORDER BY t.slug""")

_UNKNOWN_TENANT_VERSIONS = sql.SQL("""
    SELECT DISTINCT {v} FROM {hist}
    WHERE track = 'tenant' AND kind = 'versioned' AND success
      AND NOT ({v} = ANY(%(v)s::text[]))
    ORDER BY 1""")

_ALL_ACTIVE = """
    SELECT t.slug, t.schema_name, n.oid IS NOT NULL
    FROM public.tenants t LEFT JOIN pg_namespace n ON n.nspname = t.schema_name
    WHERE t.is_active ORDER BY t.slug"""
