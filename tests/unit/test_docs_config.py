"""The docs' config tables say what the models say, so they cannot drift.

Each table whose first column is `key` is read row by row: the backticked keys
(`a`, `b` or `a` / `b`; a later key may drop the earlier one's prefix) and as
many defaults in the second column. A default is compared with the model's own
(the dataclass field, written once); a default that depends on other settings
is described in words, pinned here in DESCRIBED. Keys the docs name that no
model has fail too.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from infra import config

ROOT = Path(__file__).resolve().parents[2]
# doc file -> the config section its tables describe ("" for top-level keys)
TABLES = {"README.md": "", "docs/pooler.md": "pooler", "docs/backup.md": "backup",
          "docs/monitoring.md": "monitoring"}
# Defaults that follow from other settings, as the docs word them.
DESCRIBED = {
    "pooler.port": "postgres.port + 1000",
    "backup.repo": "posix",                     # "(`s3` on aws)"
    "backup.s3.bucket": "–",
    "backup.s3.region": "aws region",
    "backup.s3.endpoint": "s3.<region>.amazonaws.com",
    "backend": "from the stack name",
    "state_dir": ".state/<stack>",
    "tenants": "none",
    "postgres.parameters": "none",
}
MODELS: dict[str, Any] = {
    "": config.PlatformConfig(stack="", backend="", postgres=config.PostgresSettings()),
    "postgres": config.PostgresSettings(),
    "pooler": config.PoolerSettings(),
    "backup": config.BackupSettings(),
    "backup.schedule": config.BackupSchedule(),
    "backup.s3": config.S3Repo(region="", endpoint=""),
    "monitoring": config.MonitoringSettings(),
    "docker": config.DockerSettings(),
    "aws": config.AwsSettings(),
}


def rows(doc: str) -> list[tuple[int, str, str]]:
    """(line number, key cell, default cell) of every `key` table in a Markdown file."""
    out: list[tuple[int, str, str]] = []
    in_table = False
    for n, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| key |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not set(cells[0]) <= set("-"):
            out.append((n, cells[0], cells[1]))
    return out


def keys(cell: str, section: str) -> list[str]:
    found = re.findall(r"`([^`]+)`", cell)
    out: list[str] = []
    for k in found:
        if out and k.startswith("."):              # `schedule.full` / `.diff`
            k = out[-1].rsplit(".", 1)[0] + k
        elif out and "." in out[0] and "." not in k:   # `postgres.owner_role` / `app_role`
            k = out[0].rsplit(".", 1)[0] + "." + k
        out.append(k)
    return [f"{section}.{k}" if section else k for k in out]


def defaults(cell: str, count: int) -> list[str]:
    sep = " / " if " / " in cell else ", "
    parts = cell.split(sep) if count > 1 else [cell]
    out = []
    for part in parts:
        text = part.split(":")[0] if part.startswith("`0`:") else part
        text = re.sub(r"\s*\(.*\)$", "", text.strip())   # "(the local stack uses …)"
        out.append(text.strip().strip("`"))
    return out


def model_default(key: str) -> Any:
    section, _, name = key.rpartition(".")
    model = MODELS[section]
    field = {f.name: f for f in dataclasses.fields(model)}[name]
    return getattr(model, field.name)


def same(doc: str, value: Any) -> bool:
    if isinstance(value, bool):
        return doc == str(value).lower()
    if isinstance(value, int) and re.fullmatch(r"[0-9]+(kB|MB|GB|TB)", doc):
        return config.memory_bytes(doc) == value
    return doc == str(value)


CASES = [(doc, n, key, default) for doc, section in TABLES.items()
         for n, key_cell, default_cell in rows(doc)
         for key, default in zip(keys(key_cell, section),
                                 defaults(default_cell, len(keys(key_cell, section))),
                                 strict=True)]


def test_the_docs_have_config_tables() -> None:
    assert {doc for doc, *_ in CASES} == set(TABLES)
    assert len(CASES) > 50


@pytest.mark.parametrize(("doc", "line", "key", "default"), CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_documented_default_is_the_models(doc: str, line: int, key: str, default: str) -> None:
    if key in DESCRIBED:
        assert default.startswith(DESCRIBED[key]), f"{doc}:{line}: {key} {default!r}"
        return
    value = model_default(key)
    assert same(default, value), f"{doc}:{line}: {key} documented as {default!r}, " \
                                 f"the model's default is {value!r}"


def test_dev_and_prod_name_real_keys_and_defaults() -> None:
    text = (ROOT / "docs/dev-and-prod.md").read_text()
    named = re.findall(r"`(docker|aws)\.([a-z_]+)`(?:[^`.]{0,20}default `?([^`),;]+))?", text)
    assert named
    for section, name, default in named:
        value = model_default(f"{section}.{name}")
        if default:
            assert same(default.strip(), value), (f"{section}.{name}", default, value)
