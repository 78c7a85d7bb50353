"""`postgres.parameters`: refuse what could turn security off, check the rest.

Two gates, both before any resource changes:

1. Settings pg-platform manages, or that weaken security, are refused with
   the reason (TLS, authentication files, replication and archive commands,
   preloaded libraries, listen addresses...).
2. Every other name, type and range is checked against the installed
   server's own catalogue: ``postgres --describe-config`` (names, types,
   contexts, min and max), completed by ``pg_settings`` of a throw-away
   single-user instance for units and enum values. The catalogue is built once
   per binary (keyed by its path, size and mtime) and cached under
   ``~/.cache/pg-platform``.

Where the binary is not installed (a prod preview on a laptop) only gate 1
applies, and the catalogue check is skipped with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ConfigError, ProcessError
from infra.hostctl import gucs

logger = logging.getLogger(__name__)

# (pattern, why). fnmatch-like: a trailing * matches any suffix.
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("ssl*", "TLS is configured by pg-platform and always on"),
    ("include*", "an include could pull in any setting, unchecked"),
    ("config_file", "pg-platform renders postgresql.conf"),
    ("hba_file", "pg-platform renders pg_hba.conf (hostssl + scram-sha-256 only)"),
    ("ident_file", "pg-platform renders the authentication files"),
    ("data_directory", "the backend decides where data lives"),
    ("external_pid_file", "the backend decides where the pid file lives"),
    ("*_conninfo", "replication connections are rendered with verify-full TLS"),
    ("primary_slot_name", "each replica's slot is managed by the backend"),
    ("archive_*", "WAL archiving is pgBackRest's, rendered by pg-platform"),
    ("restore_command", "recovery is pgBackRest's, rendered by pg-platform"),
    ("recovery_*", "recovery targets belong to the restore command"),
    ("shared_preload_libraries", "loading code into every backend is managed"),
    ("local_preload_libraries", "loading code into sessions is refused"),
    ("session_preload_libraries", "loading code into sessions is refused"),
    ("dynamic_library_path", "loading code from other paths is refused"),
    ("jit_provider", "loading code from other libraries is refused"),
    ("listen_addresses", "set by pg-platform (postgres.listen_address)"),
    ("port", "set by pg-platform (postgres.port)"),
    ("unix_socket_*", "the local socket is break-glass only and managed"),
    ("password_encryption", "scram-sha-256 is required"),
    ("krb_*", "only scram-sha-256 authentication is used"),
    ("db_user_namespace", "role names are managed"),
    ("authentication_timeout", "managed with the authentication rules"),
    ("wal_level", "replication and backups need the managed value"),
    ("max_wal_senders", "sized by pg-platform for replicas and backups"),
    ("hot_standby", "managed for replicas"),
    ("allow_system_table_modifications", "weakens the catalog's integrity"),
    ("allow_in_place_tablespaces", "developer setting, weakens isolation"),
    ("ignore_system_indexes", "developer setting"),
    ("zero_damaged_pages", "silently destroys data"),
    ("ignore_checksum_failure", "hides data corruption"),
    ("fsync", "turning it off loses data on a crash"),
    ("full_page_writes", "turning it off corrupts data on a crash"),
    ("data_sync_retry", "hides write failures"),
    ("row_security", "row-level security is part of tenant isolation"),
    ("log_connections", "managed"),
    ("lc_messages", "messages must stay parseable by the tooling"),
)
# Settings that have their own key under pg-platform:postgres.
OWN_KEYS = ("max_connections", "superuser_reserved_connections", "shared_buffers",
            "work_mem", "maintenance_work_mem", "effective_cache_size")
# Extension settings are not in the core catalogue; these prefixes are accepted as strings.
EXTENSION_PREFIXES = ("pg_stat_statements.", "timescaledb.", "auto_explain.", "postgis.")

_MEMORY_UNITS = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0,
               "d": 86400000.0}
_NUMBER = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_BOOL = {"on", "off", "true", "false", "yes", "no", "1", "0"}
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "pg-platform"


@dataclass(frozen=True)
class Setting:
    name: str
    vartype: str  # bool, integer, real, string, enum
    context: str
    unit: str | None = None
    min_val: float | None = None
    max_val: float | None = None
    enumvals: tuple[str, ...] = ()


def forbidden_reason(name: str) -> str | None:
    for pattern, why in FORBIDDEN:
        if pattern.endswith("*") and name.startswith(pattern[:-1]):
            return why
        if pattern.startswith("*") and name.endswith(pattern[1:]):
            return why
        if name == pattern:
            return why
    return None


def _binary(version: int) -> Path:
    return Path(f"/usr/lib/postgresql/{version}/bin/postgres")


def _num(s: str) -> float | None:
    try:
        return float(s) if s else None
    except ValueError:
        return None


def _describe(binary: Path) -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for f in gucs.describe_config(binary):
        if len(f) >= 7:
            vt = f[3].lower().replace("boolean", "bool")
            found[f[0]] = Setting(f[0], vt, f[1], None, _num(f[5]), _num(f[6]))
    return found


@functools.lru_cache(maxsize=4)
def catalogue(version: int) -> dict[str, Setting] | None:
    """The installed server's settings, or None when no server binary is installed."""
    binary = _binary(version)
    if not binary.exists():
        logger.warning("postgres %s is not installed here; postgres.parameters are checked "
                       "against the forbidden list only", version)
        return None
    st = binary.stat()
    key = hashlib.sha256(f"{binary}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"gucs-{version}-{key}.json"
    try:
        raw = json.loads(cache.read_text())
        return {n: Setting(n, s["vartype"], s["context"], s["unit"], s["min_val"],
                           s["max_val"], tuple(s["enumvals"])) for n, s in raw.items()}
    except (OSError, ValueError, KeyError):
        pass
    found = _describe(binary)
    try:
        extra = gucs.units_and_enums(binary)
    except (OSError, ProcessError) as exc:
        logger.warning("could not read units from a single-user %s (%s); values with units "
                       "are checked by type only", binary, exc)
        extra = {}
    for name, (unit, enums) in extra.items():
        if name in found:
            s = found[name]
            found[name] = Setting(s.name, s.vartype, s.context, unit, s.min_val, s.max_val,
                                  enums)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp_file = cache.with_suffix(".tmp")
    tmp_file.write_text(json.dumps({n: vars(s) | {"enumvals": list(s.enumvals)}
                                    for n, s in found.items()}, sort_keys=True))
    tmp_file.replace(cache)
    return found


def _in_base_units(s: Setting, value: str) -> float:
    m = _NUMBER.match(value)
    if not m:
        raise ValueError(f"expected a number{' with a unit' if s.unit else ''}")
    number, unit = float(m.group(1)), m.group(2)
    if not unit:
        return number
    if s.unit in ("B", "kB", "8kB", "MB") and unit in _MEMORY_UNITS:
        base = {"B": 1, "kB": 1 << 10, "8kB": 8 << 10, "MB": 1 << 20}[s.unit]
        return number * _MEMORY_UNITS[unit] / base
    if s.unit in ("us", "ms", "s", "min") and unit in _TIME_UNITS:
        return number * _TIME_UNITS[unit] / _TIME_UNITS[s.unit]
    allowed = (", ".join(_MEMORY_UNITS) if s.unit in ("B", "kB", "8kB", "MB")
               else ", ".join(_TIME_UNITS) if s.unit else "none")
    raise ValueError(f"unit {unit!r} is not valid here; allowed units: {allowed}")


def _check_value(s: Setting, value: str) -> str | None:
    """None when valid, else what is wrong and what is allowed."""
    if s.vartype == "bool":
        return None if value.lower() in _BOOL else "expected on or off"
    if s.vartype == "enum":
        if not s.enumvals or value.lower() in (v.lower() for v in s.enumvals):
            return None
        return f"allowed values are {', '.join(s.enumvals)}"
    if s.vartype in ("integer", "real"):
        try:
            n = _in_base_units(s, value)
        except ValueError as exc:
            return str(exc)
        if s.vartype == "integer":
            n = float(round(n))
        lo, hi = s.min_val, s.max_val
        if not math.isfinite(n) or (lo is not None and n < lo) or (hi is not None and n > hi):
            unit = f" {s.unit}" if s.unit else ""
            return f"out of range; allowed {lo:g} to {hi:g}{unit}" if lo is not None and \
                hi is not None else "out of range"
        return None
    return None


def _lookup(cat: dict[str, Setting], name: str) -> Setting | None:
    """PostgreSQL's setting names are case-insensitive: `timezone` is `TimeZone`."""
    found = cat.get(name)
    if found is None:
        found = next((s for n, s in cat.items() if n.lower() == name.lower()), None)
    return found


def check(name: str, value: str, where: str, version: int) -> None:
    """:raises ConfigError: naming `where` (the key), the value, and why or what is allowed."""
    why = forbidden_reason(name)
    if why:
        raise ConfigError(f"{where}: {name!r} cannot be set through postgres.parameters: {why}")
    if name in OWN_KEYS:
        raise ConfigError(f"{where}: {name!r} has its own key; set pg-platform:postgres.{name}")
    if "." in name:
        if name.startswith(EXTENSION_PREFIXES):
            return
        raise ConfigError(f"{where}: {name!r} is not a setting of an extension pg-platform "
                          f"uses; allowed prefixes: {', '.join(EXTENSION_PREFIXES)}")
    cat = catalogue(version)
    if cat is None:
        return
    s = _lookup(cat, name)
    if s is None:
        close = sorted(n for n in cat if n.startswith(name[:4]))[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: {name!r} is not a PostgreSQL {version} setting "
                          f"(postgres --describe-config){hint}")
    if s.context == "internal":
        raise ConfigError(f"{where}: {name!r} is read-only (context internal)")
    problem = _check_value(s, value)
    if problem:
        raise ConfigError(f"{where}={value!r}: {problem}")


def check_own_key(name: str, value: str, where: str, version: int) -> None:
    """A setting with its own key (e.g. postgres.work_mem): type and range only."""
    cat = catalogue(version)
    s = _lookup(cat, name) if cat else None
    if s is None:
        return
    problem = _check_value(s, value)
    if problem:
        raise ConfigError(f"{where}={value!r}: {problem}")
