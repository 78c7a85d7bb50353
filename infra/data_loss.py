"""The one guard against changes that would delete data, for every backend.

A replace of something that holds data (a local data directory, a database, an
EBS data volume) is refused while Pulumi computes the diff, so `pulumi preview`
stops with a message before anything changes, unless the stack sets
`pg-platform:allow_data_loss: true`.
"""

from __future__ import annotations

from typing import Any

from infra.errors import ConfigError


def refuse_data_loss(replaces: list[str], olds: dict[str, Any], news: dict[str, Any], *,
                     what: str, keys: dict[str, str]) -> None:
    """Stop a preview whose replace would delete data, unless the stack allows it.

    The error names the setting, the old and new value and the safe ways; it is
    raised in diff, so nothing has changed when the user reads it.
    """
    if not replaces or news.get("allow_data_loss"):
        return
    key = replaces[0]
    raise ConfigError(
        f"{keys[key]}: changing {olds.get(key)!r} to {news.get(key)!r} would "
        f"delete {what}. Keep the old value, or move the data yourself (`make destroy` "
        "after a backup), or set pg-platform:allow_data_loss: true to accept the loss")
