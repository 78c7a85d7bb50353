"""`pulumi preview` of a throw-away stack refuses 20 forbidden or malformed parameters.

The real engine runs the program; config loading refuses each value before any
resource is registered, and the message names the key. The same values are
refused by plain config loading in tests/unit/test_pgparams.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.engine import ThrowawayStack

pytestmark = pytest.mark.engine

# (key, value): each must be refused, naming pg-platform:postgres.parameters.<key>
BAD: list[tuple[str, Any]] = [
    ("ssl", "off"), ("ssl_ciphers", "NULL"), ("include", "/etc/extra.conf"),
    ("include_dir", "/etc/conf.d"), ("hba_file", "/tmp/trust.conf"),
    ("ident_file", "/tmp/ident.conf"), ("primary_conninfo", "host=evil"),
    ("archive_library", "basic_archive"), ("restore_command", "cp %f %p"),
    ("shared_preload_libraries", "evil"), ("listen_addresses", "*"),
    ("password_encryption", "md5"), ("row_security", "off"), ("wrok_mem", "4MB"),
    ("statement_timeout", "5 parsecs"), ("log_min_messages", "loud"),
    ("max_parallel_workers", 99999999), ("jit", "maybe"), ("random_page_cost", -1),
    ("pg_stat_statments.max", 10),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[ThrowawayStack]:
    s = ThrowawayStack("params", {})  # preview only: nothing listens, no port is taken
    s.init()
    try:
        yield s
    finally:
        s.remove()


@pytest.mark.parametrize(("key", "value"), BAD, ids=[b[0] for b in BAD])
def test_preview_refuses_the_parameter_naming_its_key(stack: ThrowawayStack, key: str,
                                                      value: Any) -> None:
    stack.set_config({"postgres": {"parameters": {key: value}}})
    proc = stack.preview(check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"pg-platform:postgres.parameters.{key}" in text, text[-2000:]
    assert "Traceback" not in text
    assert not list(stack.state_dir.glob("*")), "a resource was made before the refusal"
