"""Generated passwords as Pulumi secrets.

The random provider plugin cannot be fetched on these machines, so a small
dynamic provider generates each password once, at create, and keeps it in the
stack's state, where Pulumi encrypts it. It is stable across runs: only a new
`name` or a bump of `rotation` replaces it. Every backend uses it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from infra.resource_types import keep_urn

PROVIDER_VERSION = "1"
# URL-safe, so DSNs and config files need no escaping; 32 bytes of entropy.
_LENGTH = 32


class PasswordProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = {**props, "value": secrets.token_urlsafe(_LENGTH)}
        return CreateResult(id_=f"password-{props['name']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("name", "rotation") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces,
                          delete_before_replace=False)


class Password(Resource, module="secrets", name="Password"):
    """A generated password; `value` is a secret output."""

    value: pulumi.Output[str]

    def __init__(self, name: str, rotation: int = 0,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PasswordProvider(), name,
                         {"name": name, "rotation": rotation, "value": None,
                          "provider_version": PROVIDER_VERSION}, keep_urn(opts, secret=["value"]))
