"""Committed stack files carry nothing machine-specific (a fresh clone must work)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MACHINE_SPECIFIC = ("encryptionsalt", "secretsprovider", "encryptedkey")


def committed_stack_files() -> dict[str, str]:
    """Each tracked Pulumi.<stack>.yaml as git stores it (after the clean filter)."""
    names = subprocess.run(["git", "ls-files", "Pulumi.*.yaml"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {name: subprocess.run(["git", "show", f":{name}"], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout for name in names}


def test_there_are_stack_files() -> None:
    assert {"Pulumi.local.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"} <= set(
        committed_stack_files())


@pytest.mark.parametrize("key", MACHINE_SPECIFIC)
def test_no_committed_stack_file_carries_secrets_settings(key: str) -> None:
    offenders = [name for name, text in committed_stack_files().items()
                 if any(line.startswith(f"{key}:") for line in text.splitlines())]
    assert offenders == [], f"{key} is committed in {offenders}"


def test_the_clean_filter_strips_what_pulumi_writes() -> None:
    """The filter bootstrap configures is the one .gitattributes names."""
    attrs = (ROOT / ".gitattributes").read_text()
    assert "Pulumi.*.yaml filter=pulumi-stack" in attrs
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    for key in MACHINE_SPECIFIC:
        assert f"/^{key}:/d" in bootstrap
