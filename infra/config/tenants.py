"""`pg-platform:tenants`: the tenants the SQL engine gives a schema each.

The slug rule itself belongs to the SQL engine (infra/schema/tenants.py), which
builds schema names from it; this module only reads the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.config.names import tenant_name
from infra.config.section import Section, key
from infra.errors import ConfigError
from infra.schema.tenants import validate_slug

PLANS = ("free", "standard", "premium", "enterprise")
DEFAULT_PLAN = "standard"


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str
    plan: str


def parse_tenants(raw: Any) -> tuple[Tenant, ...]:
    """Validate `pg-platform:tenants`, a list of {slug, name, plan} mappings."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{key('tenants')}={raw!r}: expected a list of "
                          "{slug, name, plan} mappings")
    seen: set[str] = set()
    out: list[Tenant] = []
    for i, item in enumerate(raw):
        sec = Section(item, f"tenants[{i}]")
        try:
            slug = validate_slug(sec.get("slug", None))
        except ConfigError as exc:
            raise ConfigError(f"{sec.where('slug')}: {exc}") from None
        if slug in seen:
            raise ConfigError(f"{sec.where('slug')}={slug!r}: duplicate tenant slug")
        seen.add(slug)
        out.append(Tenant(slug=slug, name=tenant_name(sec.where("name"), sec.text("name", slug)),
                          plan=sec.choice("plan", DEFAULT_PLAN, PLANS)))
        sec.finish()
    return tuple(out)
