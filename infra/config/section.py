"""The stack-file reader every config section uses.

A `Section` reads one mapping, checks each value as it is read, and at the end
refuses keys nobody read. Every refusal keeps the one wording users and tests
rely on: ``pg-platform:<key>=<value>: <what is allowed>``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from infra.errors import ConfigError

PROJECT = "pg-platform"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MEMORY = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)$")


def key(path: str) -> str:
    """The full config key of a dotted path, as a stack file spells it."""
    return f"{PROJECT}:{path}"


def memory_bytes(size: str) -> int:
    """Bytes in a PostgreSQL memory size such as '128MB'."""
    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
    m = MEMORY.fullmatch(size)
    if not m:
        raise ConfigError(f"{size!r} is not a memory size such as '128MB'")
    return int(size[: -len(m.group(1))]) * units[m.group(1)]


class Section:
    """Reads one mapping from a stack file and records which keys were used."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{key(path)}: expected a mapping, got {type(raw).__name__} {raw!r}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self.used: set[str] = set()

    def where(self, name: str) -> str:
        return key(f"{self.path}.{name}" if self.path else name)

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a whole number "
                              f"from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ConfigError(f"{self.where(name)}={value}: allowed range is {lo} to {hi}")
        return value

    def seconds(self, name: str, default: float, lo: float, hi: float) -> float:
        """A duration in seconds, whole or with a fraction (0.25)."""
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a number of seconds "
                              f"from {lo:g} to {hi:g}")
        if not lo <= value <= hi:
            raise ConfigError(f"{self.where(name)}={value}: allowed range is {lo:g} to {hi:g}")
        return float(value)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise ConfigError(f"{self.where(name)}={value!r}: allowed values are "
                              f"{', '.join(allowed)}")
        return str(value)

    def ident(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not _IDENT.fullmatch(value):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a lowercase SQL "
                              "identifier (a-z, 0-9, _; starting with a letter or _; "
                              "at most 63 characters)")
        return value

    def memory(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not MEMORY.fullmatch(value):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a size such as "
                              "'128MB' (a whole number followed by kB, MB, GB or TB)")
        return value

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.where(name)}={value!r}: expected a non-empty string")
        return value

    def flag(self, name: str, default: bool, *, strings: bool = False) -> bool:
        """true/false; with `strings`, also the strings 'true'/'false' (`pulumi config set`)."""
        value = self.get(name, default)
        if strings and isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(name)}={value!r}: expected true or false")
        return value

    def pattern(self, name: str, default: str, pattern: re.Pattern[str], allowed: str, *,
                required: bool = False) -> str:
        """A string matching `pattern`; "" means unset unless `required`."""
        value = self.get(name, default)
        if required and value in (None, ""):
            raise ConfigError(f"{self.where(name)}: required; expected {allowed}")
        if value == "" and not required:
            return ""
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ConfigError(f"{self.where(name)}={value!r}: expected {allowed}")
        return value

    def list(self, name: str, *, required: bool = False) -> list[object]:
        value = self.get(name, [])
        if isinstance(value, str) or not isinstance(value, list):
            raise ConfigError(f"{self.where(name)}={value!r}: expected a list")
        if required and not value:
            raise ConfigError(f"{self.where(name)}: required; expected a non-empty list")
        return value

    def section(self, name: str) -> Section:
        return Section(self.get(name, None), f"{self.path}.{name}" if self.path else name)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ConfigError(f"{self.where(unknown[0])}: unknown setting; allowed settings "
                              f"here are {', '.join(sorted(self.used))}")


def cidr(where: str, value: object, *, allow_world: bool = False) -> str:
    """A network such as '10.0.0.0/16'; the whole internet only when `allow_world`."""
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise ConfigError(f"{where}={value!r}: expected an IPv4 or IPv6 network such as "
                          "'10.0.0.0/16' (host bits zero)") from None
    if not isinstance(value, str):
        raise ConfigError(f"{where}={value!r}: expected a CIDR string such as '10.0.0.0/16'")
    if net.prefixlen == 0 and not allow_world:
        raise ConfigError(f"{where}={value!r}: the whole internet may not reach the database "
                          "or pooler ports; list the client networks or security groups")
    return str(net)
