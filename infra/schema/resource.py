"""The SQL engine as a Pulumi resource, so `pulumi preview` shows pending SQL.

The program computes the migration set (``{"<track>/<file>": checksum}``) from
the files when it runs, and passes it, with the stack's tenants, as inputs.
Preview then diffs those inputs against the state, without touching the
database: a new or edited file, or a new tenant, shows as a change to
``migrations`` or ``tenants`` (``pulumi preview --diff`` names each one);
an unchanged tree shows no change. ``up`` runs the engine's ``apply``.

``pulumi refresh`` asks the database: files it has not applied (or tenants
without their schema) drop out of the refreshed state, so the next ``up``
applies them (e.g. a tenant added at run time by ``create_tenant``).

Dynamic-provider rules this module keeps: it imports without side effects
(dill pickles the provider by reference, and destroy/refresh unpickle it from
state without running the program), clients are created inside each method,
and ``provider_version`` is an input because code changes alone never
trigger an update.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from infra.errors import PlatformError
from infra.resource_types import keep_urn
from infra.schema import engine
from infra.schema.files import MigrationSet
from infra.schema.tenants import TenantSpec, schema_for

logger = logging.getLogger(__name__)

# 2: the engine's own history schema is versioned (an upgrade runs once), and
# checksums keep trailing whitespace inside literals, so every fingerprint changes.
PROVIDER_VERSION = "2"
# Inputs whose change means "apply again". The DSN is deliberately absent: a
# rotated password is not a reason to migrate. `target_id` (e.g. the primary
# server resource's id) is: a rebuilt server is an empty database.
_DIFFED = ("migrations", "tenants", "app_role", "provider_version", "target_id",
           "tenant_quota")


def _options(props: Mapping[str, Any]) -> engine.Options:
    return engine.Options.build(str(props.get("sql_dir") or "sql"),
                                list(props.get("tenants") or []),
                                app_role=str(props.get("app_role") or "app"),
                                workers=int(props.get("workers") or 4),
                                tenant_key=props.get("tenant_key") or None,
                                tenant_quota=(int(props["tenant_quota"])
                                              if props.get("tenant_quota") is not None
                                              else None))


def _apply(props: Mapping[str, Any]) -> dict[str, Any]:
    try:
        result = engine.apply(str(props["dsn"]), _options(props))
    except PlatformError as exc:
        # The message names file, line and PostgreSQL's error; never the DSN.
        raise RuntimeError(str(exc)) from None
    logger.info("applied %d file(s)", len(result.applied))
    return {**props, "applied_migrations": sorted(dict(props.get("migrations") or {}))}


class SchemaProvider(dyn.ResourceProvider):
    """Applies ``sql/`` to one database; see the module docstring."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures: list[dyn.CheckFailure] = []
        for i, t in enumerate(news.get("tenants") or []):
            try:
                TenantSpec.of(t)
            except (PlatformError, KeyError, TypeError) as exc:
                failures.append(dyn.CheckFailure("tenants", f"tenants[{i}]: {exc}"))
        if not isinstance(news.get("app_role", "app"), str) or not news.get("app_role", "app"):
            failures.append(dyn.CheckFailure("app_role", "app_role must be a non-empty role name"))
        return dyn.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [k for k in _DIFFED if olds.get(k) != news.get(k)]
        return dyn.DiffResult(changes=bool(changed), replaces=[], stables=[],
                              delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        return dyn.CreateResult("schema-migrations", _apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(_apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        """Report what the database really has, so `up` after a refresh fixes drift."""
        try:
            p = engine.plan(str(props["dsn"]), _options(props))
        except (PlatformError, OSError, KeyError) as exc:
            logger.warning("refresh could not read the database (%s); keeping state", exc)
            return dyn.ReadResult(id_, props)
        except Exception as exc:  # psycopg errors: an unreachable server is not fatal here
            logger.warning("refresh could not reach the database (%s); keeping state",
                           type(exc).__name__)
            return dyn.ReadResult(id_, props)
        pending = {m.ref for m in (*p.schema_pending, *p.policies_pending)}
        pending |= {m.ref for w in p.tenant_work for m in w.pending}
        missing = {w.slug for w in p.tenant_work} | {t.slug for t in p.unregistered}
        outs = dict(props)
        outs["migrations"] = {k: v for k, v in dict(props.get("migrations") or {}).items()
                              if k not in pending}
        outs["tenants"] = [t for t in props.get("tenants") or [] if t.get("slug") not in missing]
        outs["applied_migrations"] = sorted(outs["migrations"])
        return dyn.ReadResult(id_, outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Dropping schemas is never implied: the data goes with its server.
        logger.info("schema migrations forgotten; the database keeps its objects")


class SchemaMigrations(dyn.Resource, module="sql", name="Schema"):
    """Versioned SQL applied to one database (owner role, direct connection).

    :param dsn: the direct owner-role DSN, never the pooler's; kept secret.
    :param sql_dir: the folder with ``schema/``, ``tenant/`` and ``policies/``.
    :param tenants: the stack's tenants as ``{slug, name, plan}`` (or objects
        with those attributes, like ``infra.config.Tenant``).
    :param app_role: the application role the grants and policies name.
    :param target_id: an identity of the server (e.g. the primary resource's
        id); when it changes the SQL is applied again.
    """

    applied_migrations: pulumi.Output[list[str]]
    migrations: pulumi.Output[dict[str, str]]

    def __init__(self, resource_name: str, *, dsn: pulumi.Input[str], sql_dir: str = "sql",
                 tenants: Sequence[Any] = (), app_role: pulumi.Input[str] = "app",
                 target_id: pulumi.Input[str] | None = None, workers: int = 4,
                 tenant_key: pulumi.Input[str] | None = None, tenant_quota: int | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        ms = MigrationSet.load(Path(sql_dir))
        specs = sorted((TenantSpec.of(t) for t in tenants), key=lambda t: t.slug)
        props: dict[str, Any] = {
            "dsn": pulumi.Output.secret(dsn),
            "sql_dir": sql_dir,
            "tenants": [{"slug": t.slug, "name": t.name, "plan": t.plan,
                         "schema": schema_for(t.slug)} for t in specs],
            "app_role": app_role,
            "migrations": ms.fingerprint(),
            "provider_version": PROVIDER_VERSION,
            "target_id": target_id if target_id is not None else "",
            "workers": workers,
            "applied_migrations": None,
            "tenant_quota": tenant_quota,
        }
        if tenant_key is not None:
            props["tenant_key"] = pulumi.Output.secret(tenant_key)
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                additional_secret_outputs=["tenant_key"]))
        super().__init__(SchemaProvider(), resource_name, props, keep_urn(opts))
