"""The TimescaleDB policies as a Pulumi resource, so preview shows a policy change.

Its inputs are the stack's `pg-platform:timescaledb` policy settings; a change
(retention, compress-after, chunk size, refresh window) is a diff in `pulumi
preview` and an in-place `alter_job` on `up` (infra/timescaledb/policies.py).
It runs after the SQL engine, which defines the procedure it calls.

Dynamic-provider rules: importable without side effects, clients made inside
the methods, and PROVIDER_VERSION bumped when behaviour changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from infra.resource_types import keep_urn
from infra.timescaledb import policies

PROVIDER_VERSION = "1"
_DIFFED = ("settings", "provider_version", "target_id")


def _apply(props: Mapping[str, Any]) -> dict[str, Any]:
    try:
        result = policies.apply(str(props["dsn"]), dict(props["settings"]))
    except Exception as exc:  # psycopg errors: the message names the setting, never the DSN
        raise RuntimeError(f"TimescaleDB policies: {str(exc).strip().splitlines()[0]}") from None
    return {**props, **result}


class PoliciesProvider(dyn.ResourceProvider):
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [k for k in _DIFFED if olds.get(k) != news.get(k)]
        return dyn.DiffResult(changes=bool(changed), replaces=[], stables=[],
                              delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        return dyn.CreateResult("timescaledb-policies", _apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(_apply(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Policies stay with the data; removing the resource changes nothing."""


class TimescalePolicies(dyn.Resource, module="sql", name="TimescalePolicies"):
    """The policies of public.events and its continuous aggregate, from config."""

    mode: pulumi.Output[str]
    jobs: pulumi.Output[list[str]]

    def __init__(self, name: str, *, dsn: pulumi.Input[str], settings: Mapping[str, str],
                 target_id: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {
            "dsn": pulumi.Output.secret(dsn),
            "settings": dict(settings),
            "provider_version": PROVIDER_VERSION,
            "target_id": target_id if target_id is not None else "",
            "mode": None,
            "jobs": None,
        }
        super().__init__(PoliciesProvider(), name, props, keep_urn(opts, secret=["dsn"]))
