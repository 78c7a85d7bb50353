"""The one way pg-platform writes a libpq connection string: psycopg's `make_conninfo`.

Every DSN (stack outputs, exporters, restores, tests' servers) is a libpq
``key=value`` string, escaped by libpq's own rules, whatever the password
holds. Parse one with `psycopg.conninfo.conninfo_to_dict`.
"""

from __future__ import annotations

from typing import Any

import pulumi
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def conninfo(base: str = "", **params: object) -> str:
    """`base` (a DSN, or "") with `params` set; a None value removes that key."""
    merged = {**conninfo_to_dict(base), **params} if base else dict(params)
    return make_conninfo("", **{k: str(v) for k, v in merged.items() if v is not None})


def output(**params: pulumi.Input[Any]) -> pulumi.Output[str]:
    """`conninfo` of Outputs (a generated password, a host's address), as a secret."""
    keys = list(params)
    return pulumi.Output.secret(pulumi.Output.all(*params.values()).apply(
        lambda values: conninfo(**dict(zip(keys, values, strict=True)))))
