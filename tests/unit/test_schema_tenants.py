"""Slug rules and placeholder quoting: the paths by which SQL could be injected."""

from __future__ import annotations

import pytest
from psycopg import sql

from infra.errors import ConfigError, MigrationError
from infra.schema import sqltext
from infra.schema.lock import lock_key
from infra.schema.tenants import TenantSpec, schema_for, validate_slug


@pytest.mark.parametrize("slug", ["acme", "a", "globex_2", "x" * 50])
def test_valid_slugs(slug: str) -> None:
    assert validate_slug(slug) == slug
    assert schema_for(slug) == f"tenant_{slug}"


@pytest.mark.parametrize(("slug", "why"), [
    ("Acme", "invalid"),
    ("acme-corp", "invalid"),
    ("1acme", "invalid"),
    ("_acme", "invalid"),
    ("", "invalid"),
    ("x" * 51, "51 characters"),
    ('acme"; DROP SCHEMA public; --', "invalid"),
    ("acme corp", "invalid"),
    ("ünï", "invalid"),
])
def test_invalid_slugs_name_value_and_rule(slug: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_slug(slug)
    msg = str(err.value)
    assert repr(slug) in msg and why in msg
    assert "lowercase letters a-z, digits and '_'" in msg


def test_non_string_slug_is_refused() -> None:
    with pytest.raises(ConfigError, match="None is not a string"):
        validate_slug(None)


def test_tenant_spec_from_mapping_validates() -> None:
    assert TenantSpec.of({"slug": "acme", "name": "Acme", "plan": "free"}) == \
        TenantSpec("acme", "Acme", "free")
    with pytest.raises(ConfigError):
        TenantSpec.of({"slug": "Bad"})


def test_placeholders_become_quoted_identifiers_and_literals() -> None:
    [stmt] = sqltext.split("GRANT USAGE ON SCHEMA ${tenant_schema} TO ${app_role};"
                           " -- ${app_role:literal}", "f.sql")
    q = stmt.render({"tenant_schema": 'we"ird', "app_role": "app"}, "f.sql")
    assert isinstance(q, sql.Composed)
    parts = list(q)
    assert sql.Identifier('we"ird') in parts and sql.Identifier("app") in parts
    assert sql.Literal("app") not in parts  # the comment is not code


def test_unknown_placeholder_names_file_line_and_known_names() -> None:
    [stmt] = sqltext.split("\n" * 6 + "SELECT 1\n FROM ${nope}", "f.sql")
    with pytest.raises(MigrationError, match=r"f\.sql:8: unknown placeholder \$\{nope\}; "
                                             r"defined: app_role"):
        stmt.render({"app_role": "app"}, "f.sql")


def test_lock_key_is_stable_signed_64_bit_and_per_namespace() -> None:
    k = lock_key("pgplatform")
    assert k == lock_key("pgplatform") and k != lock_key("other")
    assert -(2 ** 63) <= k < 2 ** 63
