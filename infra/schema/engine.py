"""The engine's verbs: plan, apply, validate, repair (status is a plan, shown).

`apply` runs the tracks in a fixed order: the schema track (versioned, then
its repeatables), then the config tenants are registered and every active
tenant schema is created or brought up to date, then the policies track, so
that policies see every table they may refer to. A no-op apply looks first
without the lock and returns at once; otherwise it takes the writer lock,
looks again (another writer may have just finished) and applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from infra.errors import ChecksumMismatch, MigrationError, MigrationRefused
from infra.schema import credentials, definer_lint, history, lint, runner, tenant_limits, tenants
from infra.schema.files import MigrationSet
from infra.schema.lock import WriterLock
from infra.schema.plan import Plan, survey
from infra.schema.status import StatusRow
from infra.schema.status import rows as status_rows
from infra.schema.tenants import TenantLike, TenantSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How to run: where the SQL is, which tenants, which role names.

    :param tenants: the stack config's tenants (slug, name, plan).
    :param app_role: the application role that policies and grants name.
    :param workers: connections used to migrate tenant schemas in parallel.
    :param lock_timeout: seconds to wait for another apply to finish.
    """

    sql_dir: Path = Path("sql")
    tenants: tuple[TenantSpec, ...] = ()
    app_role: str = "app"
    workers: int = 4
    history_schema: str = "pgplatform"
    lock_timeout: float = 600.0
    extra_placeholders: Mapping[str, str] = field(default_factory=dict)
    # The secret tenant role passwords derive from (infra/schema/credentials.py);
    # None leaves tenant roles without a password (they cannot log in).
    tenant_key: str | None = field(default=None, repr=False)
    # Most tenants public.create_tenant may register (public.platform_limits).
    tenant_quota: int | None = None

    @classmethod
    def build(cls, sql_dir: str | Path = "sql",
              tenant_list: Sequence[TenantLike | Mapping[str, str]] = (),
              **kwargs: Any) -> Options:
        return cls(sql_dir=Path(sql_dir),
                   tenants=tuple(TenantSpec.of(t) for t in tenant_list), **kwargs)

    def placeholders(self) -> dict[str, str]:
        return {**self.extra_placeholders, "app_role": self.app_role,
                "history_schema": self.history_schema}


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    tenants_created: list[str] = field(default_factory=list)
    tenants_migrated: int = 0
    seconds: float = 0.0
    engine_versions: list[int] = field(default_factory=list)  # the engine's own, applied

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.tenants_created or self.tenants_migrated
                    or self.engine_versions)


def load(opts: Options) -> MigrationSet:
    return MigrationSet.load(opts.sql_dir)


def plan(dsn: str, opts: Options) -> Plan:
    """What `apply` would do, and what would stop it; reads only."""
    ms = load(opts)
    with runner.connect(dsn, "schema plan") as conn:
        return _survey(conn, ms, opts)


def _survey(conn: psycopg.Connection[Any], ms: MigrationSet, opts: Options) -> Plan:
    p = survey(conn, ms, opts.tenants, opts.history_schema)
    p.refused = [str(problem) for problem in lint.run(p.pending_files())]
    return p


@dataclass
class Validation:
    """What `validate` found: problems of the files, and (with a DSN) the plan."""

    problems: list[str]
    files: int
    plan: Plan | None = None


def validate(dsn: str | None, opts: Options,
             checks: Sequence[lint.Check] | None = None) -> Validation:
    """Check every file offline (syntax with PostgreSQL's grammar, refused
    statements, the lint checks), and with a DSN the history too (edited
    applied files, vanished files, out-of-order versions).

    :param checks: the lint checks; default :data:`infra.schema.lint.CHECKS`.
    :raises ChecksumMismatch: when an applied versioned file was edited.
    :raises MigrationRefused: for the other problems.
    """
    ms = load(opts)
    problems = [str(p) for p in lint.run(ms.all(), checks)]
    # Unsafe SECURITY DEFINER functions, across files (a later file may fix an applied one).
    problems += [str(f) for f in definer_lint.lint_files(definer_lint.sql_files(opts.sql_dir))]
    result = Validation(problems, len(ms.all()))
    if dsn is not None:
        with runner.connect(dsn, "schema validate") as conn:
            result.plan = survey(conn, ms, opts.tenants, opts.history_schema)
        problems += [p for p in result.plan.problems() if p not in problems]
    if problems:
        cls = ChecksumMismatch if result.plan and result.plan.mismatches else MigrationRefused
        hint = "; run repair to accept the edited files on purpose" \
            if result.plan and result.plan.mismatches else ""
        raise cls("refusing to migrate: " + "; ".join(problems) + hint)
    return result


def _refuse_problems(p: Plan) -> None:
    problems = p.problems()
    if not problems:
        return
    cls = ChecksumMismatch if p.mismatches else MigrationRefused
    hint = "; run repair to accept the edited files on purpose" if p.mismatches else ""
    raise cls("refusing to migrate: " + "; ".join(problems) + hint)


def apply(dsn: str, opts: Options,
          on_progress: Callable[[int, int], None] | None = None) -> ApplyResult:
    """Bring the database to the files; see the module docstring for the order.

    :param on_progress: called as (done, total) while tenant schemas migrate.
    :raises MigrationRefused: for a refused plan (nothing ran).
    :raises MigrationError: for a failed file (nothing of it recorded) or a
        lock that did not come free in time.
    """
    started = time.monotonic()
    definer_lint.refuse(definer_lint.sql_files(opts.sql_dir))
    ms = load(opts)
    result = ApplyResult()
    with runner.connect(dsn, "schema apply") as conn:
        first = _survey(conn, ms, opts)
        _refuse_problems(first)
        if opts.tenant_quota is not None:
            tenant_limits.sync(conn, opts.tenant_quota)
        if first.is_noop and first.history_exists:
            logger.info("schema: nothing to do")
            result.seconds = time.monotonic() - started
            return result
        with WriterLock(dsn, opts.history_schema, timeout=opts.lock_timeout):
            result.engine_versions = history.ensure(conn, opts.history_schema)
            _apply_locked(conn, dsn, ms, opts, result, on_progress)
    result.seconds = time.monotonic() - started
    logger.info("schema: applied %d file(s), created %d tenant schema(s) in %.2fs",
                len(result.applied), len(result.tenants_created), result.seconds)
    return result


def _apply_locked(conn: psycopg.Connection[Any], dsn: str, ms: MigrationSet, opts: Options,
                  result: ApplyResult, on_progress: Callable[[int, int], None] | None) -> None:
    values = opts.placeholders()
    p = _survey(conn, ms, opts)
    _refuse_problems(p)
    for m in p.schema_pending:
        runner.run(conn, m, values, opts.history_schema)
        result.applied.append(m.ref)
    if ms.tenant or opts.tenants:
        p = _survey(conn, ms, opts)
        if p.unregistered:
            if not p.registry_exists:
                raise MigrationError(
                    f"stack config lists {len(opts.tenants)} tenant(s) but the schema track "
                    f"did not create the registry {tenants.REGISTRY}; add it to "
                    f"{opts.sql_dir}/schema or remove the tenants")
            tenants.register(conn, p.unregistered)
            p = _survey(conn, ms, opts)
        _refuse_problems(p)
        outcomes = tenants.migrate(dsn, p.tenant_work, values, opts.history_schema,
                                   opts.workers, on_progress,
                                   tenant_values=_tenant_values(opts.tenant_key))
        result.tenants_migrated = len(outcomes)
        result.tenants_created = sorted(o.schema for o in outcomes if o.created)
        result.applied += sorted({ref for o in outcomes for ref in o.applied})
    for m in p.policies_pending:
        runner.run(conn, m, values, opts.history_schema)
        result.applied.append(m.ref)
    if opts.tenant_quota is not None:
        tenant_limits.sync(conn, opts.tenant_quota)


def _tenant_values(key: str | None) -> Callable[[str], Mapping[str, str]]:
    """Per-tenant placeholders: the tenant role's SCRAM verifier, derived from `key`
    ('' without a key: the role then has no password and cannot log in)."""
    if not key:
        return lambda _slug: {"tenant_verifier": ""}
    return lambda slug: {"tenant_verifier": credentials.verifier(key, slug)}


def repair(dsn: str, opts: Options) -> list[str]:
    """Accept edited applied files and forget vanished ones, on purpose.

    Nothing is executed: only the history changes. Returns what was done.
    """
    ms = load(opts)
    done: list[str] = []
    with runner.connect(dsn, "schema repair") as conn, \
            WriterLock(dsn, opts.history_schema, timeout=opts.lock_timeout):
        p = survey(conn, ms, opts.tenants, opts.history_schema)
        if not p.history_exists:
            return done
        history.ensure(conn, opts.history_schema)
        by_ref = {m.ref: m for m in ms.all()}
        with conn.transaction():
            for ref in sorted({mm.ref for mm in p.mismatches}):
                n = history.realign(conn, opts.history_schema, by_ref[ref])
                done.append(f"{ref}: recorded checksum set to {by_ref[ref].checksum} "
                            f"({n} history row(s))")
            for track, version, label in p.unknown:
                n = history.forget(conn, opts.history_schema, track, version)
                done.append(f"{label}: forgotten ({n} history row(s)); its file is gone")
    for line in done:
        logger.warning("repair: %s", line)
    return done


def status(dsn: str, opts: Options) -> tuple[Plan, list[StatusRow]]:
    """The plan and one row per file, for people; reads only."""
    ms = load(opts)
    with runner.connect(dsn, "schema status") as conn:
        p = _survey(conn, ms, opts)
        active = 0
        if p.registry_exists:
            row = conn.execute(f"SELECT count(*) FROM {tenants.REGISTRY} "
                               "WHERE is_active").fetchone()
            active = int(row[0]) if row else 0
    return p, status_rows(p, active)
