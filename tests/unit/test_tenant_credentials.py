"""Tenant role passwords derived from one key, and the tenant-dsn command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from infra import scram
from infra.errors import ConfigError
from infra.exitcodes import ERROR, OK
from infra.schema import cli, credentials

KEY = "k" * 43


def test_passwords_are_stable_distinct_and_long() -> None:
    a, b = credentials.password(KEY, "acme"), credentials.password(KEY, "globex")
    assert a == credentials.password(KEY, "acme") and a != b
    assert len(a) == 43 and credentials.password("x" * 43, "acme") != a


def test_verifier_is_the_servers_scram_form_for_the_tenant_role() -> None:
    v = credentials.verifier(KEY, "acme")
    assert v == scram.verifier("tenant_acme", credentials.password(KEY, "acme"),
                               credentials.TENANT_ITERATIONS)
    # 256-bit passwords need no stretching (credentials.py): cheap for 10,000 tenants.
    assert v.startswith(f"SCRAM-SHA-256${credentials.TENANT_ITERATIONS}:")


def test_a_short_key_or_a_bad_slug_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        credentials.password("short", "acme")
    with pytest.raises(ConfigError, match="tenant slug"):
        credentials.role_for("Acme; DROP")


def test_dsn_keeps_host_port_database_and_tls_and_swaps_the_role() -> None:
    base = ("postgresql://app:secret@127.0.0.1:6432/platform"
            "?sslmode=verify-full&sslrootcert=/x/ca.crt")
    got = conninfo_to_dict(credentials.dsn(base, KEY, "acme"))
    assert got["user"] == "tenant_acme" and got["password"] == credentials.password(KEY, "acme")
    assert (got["host"], got["port"], got["dbname"]) == ("127.0.0.1", "6432", "platform")
    assert (got["sslmode"], got["sslrootcert"]) == ("verify-full", "/x/ca.crt")
    assert "secret" not in credentials.dsn(base, KEY, "acme")


def test_tenant_dsn_command_reads_a_0600_key_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    base = "postgresql://app:pw@127.0.0.1:6432/platform?sslmode=verify-full"
    argv = ["tenant-dsn", "acme", "--dsn", base, "--tenant-key-file", str(key_file)]
    assert cli.main(argv) == ERROR
    assert "mode 0644; allowed: 0600" in capsys.readouterr().err
    os.chmod(key_file, 0o600)
    assert cli.main(argv) == OK
    printed = capsys.readouterr().out.strip()
    assert printed == credentials.dsn(base, KEY, "acme")
