"""postgres.parameters: forbidden settings and the installed server's own catalogue.

Real `postgres --describe-config` of the installed binary; no mock.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra import config
from infra.errors import ConfigError

# (key, value, words the message must contain)
REFUSED: list[tuple[str, Any, str]] = [
    ("ssl", "off", "TLS"),
    ("ssl_ciphers", "NULL", "TLS"),
    ("ssl_min_protocol_version", "TLSv1", "TLS"),
    ("include", "/etc/extra.conf", "include"),
    ("include_dir", "/etc/conf.d", "include"),
    ("hba_file", "/tmp/trust.conf", "set by pg-platform"),
    ("ident_file", "/tmp/ident.conf", "authentication"),
    ("primary_conninfo", "host=evil", "verify-full"),
    ("archive_library", "basic_archive", "pgBackRest"),
    ("restore_command", "cp %f %p", "pgBackRest"),
    ("shared_preload_libraries", "evil", "loading code"),
    ("session_preload_libraries", "evil", "loading code"),
    ("listen_addresses", "*", "set by pg-platform"),
    ("password_encryption", "md5", "set by pg-platform"),
    ("row_security", "off", "tenant isolation"),
    ("wrok_mem", "4MB", "not a PostgreSQL 15 setting"),
    ("statement_timeout", "5 parsecs", "allowed units"),
    ("log_min_messages", "loud", "allowed values are"),
    ("max_parallel_workers", 99999999, "out of range"),
    ("jit", "maybe", "on or off"),
    ("random_page_cost", -1, "out of range"),
    ("pg_stat_statments.max", 10, "allowed prefixes"),
    ("work_mem", "64MB", "its own key"),
]


@pytest.mark.parametrize(("name", "value", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_parameter_names_the_key(name: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load({"postgres": {"parameters": {name: value}}}, "test")
    assert f"pg-platform:postgres.parameters.{name}" in str(err.value)
    assert words in str(err.value)


def test_own_memory_key_is_checked_against_the_catalogue() -> None:
    with pytest.raises(ConfigError,
                       match=r"pg-platform:postgres\.work_mem='3TB': allowed range is"):
        config.load({"postgres": {"work_mem": "3TB"}}, "test")


def test_valid_parameters_pass() -> None:
    cfg = config.load({"postgres": {"parameters": {
        "statement_timeout": "30s", "log_min_messages": "warning", "random_page_cost": 1.1,
        "jit": False, "temp_buffers": "16MB", "pg_stat_statements.max": 5000}}}, "test")
    assert dict(cfg.postgres.parameters)["jit"] == "off"


def test_names_match_the_catalogue_case_insensitively() -> None:
    """The catalogue spells it `TimeZone`; PostgreSQL reads `timezone` as the same setting."""
    cfg = config.load({"postgres": {"parameters": {"timezone": "UTC",
                                                   "datestyle": "ISO, MDY"}}}, "test")
    assert dict(cfg.postgres.parameters)["timezone"] == "UTC"
    with pytest.raises(ConfigError, match=r"parameters\.datestyle.*allowed|not a PostgreSQL"):
        config.load({"postgres": {"parameters": {"datestyles": "ISO"}}}, "test")
