"""SchemaMigrations under Pulumi mocks: what preview diffs, and the pure diff rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.schema.files import MigrationSet
from infra.schema.resource import PROVIDER_VERSION, SchemaMigrations, SchemaProvider

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.inputs: dict[str, Any] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs = dict(args.inputs)
        return "schema-migrations", {**args.inputs, "applied_migrations": []}

    def call(self, args: pulumi.runtime.MockCallArgs
             ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


@pulumi.runtime.test  # type: ignore[untyped-decorator]
def _build(mocks: Mocks) -> pulumi.Output[Any]:
    res = SchemaMigrations("schema", dsn="postgresql://u:p@127.0.0.1:1/db", sql_dir=str(SQL_DIR),
                           tenants=[{"slug": "globex", "name": "Globex", "plan": "free"},
                                    {"slug": "acme", "name": "Acme", "plan": "premium"}],
                           app_role="app")
    return res.applied_migrations


def test_inputs_carry_the_migration_set_and_sorted_tenants() -> None:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="pg-platform", stack="unit")
    _build(mocks)
    inputs = mocks.inputs
    assert inputs["migrations"] == MigrationSet.load(SQL_DIR).fingerprint()
    assert [t["slug"] for t in inputs["tenants"]] == ["acme", "globex"]
    assert inputs["tenants"][0]["schema"] == "tenant_acme"
    assert inputs["provider_version"] == PROVIDER_VERSION
    assert "__provider" in inputs


def test_bad_tenant_is_refused_at_program_time() -> None:
    with pytest.raises(Exception, match="Bad"):
        SchemaMigrations("schema", dsn="x", sql_dir=str(SQL_DIR),
                         tenants=[{"slug": "Bad", "name": "b", "plan": "free"}])


@pytest.mark.parametrize(("key", "value", "changes"), [
    ("migrations", {"schema/V1__a.sql": "1" * 64, "schema/V2__b.sql": "2" * 64}, True),
    ("migrations", {"schema/V1__a.sql": "f" * 64}, True),
    ("tenants", [{"slug": "acme"}, {"slug": "new"}], True),
    ("app_role", "other", True),
    ("provider_version", "0", True),
    ("target_id", "primary-2", True),
    ("dsn", "postgresql://rotated", False),
    ("workers", 8, False),
])
def test_diff_reports_changes_only_for_set_tenants_and_identity(key: str, value: Any,
                                                                changes: bool) -> None:
    olds = {"migrations": {"schema/V1__a.sql": "1" * 64}, "tenants": [{"slug": "acme"}],
            "app_role": "app", "provider_version": PROVIDER_VERSION, "target_id": "primary-1",
            "dsn": "postgresql://old", "workers": 4}
    result = SchemaProvider().diff("id", olds, {**olds, key: value})
    assert result.changes is changes and not result.replaces
