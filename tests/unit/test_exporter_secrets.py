"""Exporters get their passwords from 0600 files, never from their environment or argv."""

from __future__ import annotations

import hashlib
from pathlib import Path

from infra import config
from infra.backends.local_exporters import exporter_props

ROOT = Path(__file__).resolve().parents[2]


def test_no_password_in_exporter_environment_or_argv() -> None:
    cfg = config.load({"replicas": 1, "state_dir": "/tmp/pgp-unit-exporters"}, "local")
    pw, admin = "db-password-" + "x" * 30, "admin-password-" + "y" * 30
    props = exporter_props(cfg, monitor_password=pw, admin_password=admin,
                           sql_dir=ROOT / "sql")
    assert [p["name"] for p in props] == ["postgres-exporter-primary",
                                          "postgres-exporter-replica-1", "pgbouncer-exporter",
                                          "pgbackrest-exporter"]
    for p in props:
        plain = repr({k: v for k, v in p.items() if k != "secret_files"})
        assert pw not in plain and admin not in plain
        assert not p.get("secret_env")
        assert "DATA_SOURCE_NAME" not in p["env"]
        if p["name"] != "pgbackrest-exporter":  # no login at all: `pgbackrest info`
            assert any(pw in text or admin in text for text in p["secret_files"].values())
    pg = [p for p in props if p["name"].startswith("postgres-exporter")]
    assert all("sslmode=verify-full" in p["env"]["DATA_SOURCE_URI"] for p in pg)
    # pg_monitor only, never the break-glass superuser (docs/security.md).
    assert {p["env"]["DATA_SOURCE_USER"] for p in pg} == {"platform_monitor"}
    assert all(p["env"]["DATA_SOURCE_PASS_FILE"] in p["secret_files"] for p in pg)
    bouncer = next(p for p in props if p["name"] == "pgbouncer-exporter")
    assert bouncer["env"]["PGPASSFILE"] in bouncer["secret_files"]


def test_the_shared_query_file_is_an_input_of_one_exporter_only() -> None:
    """A preview shows the large query file once; the others carry its digest."""
    cfg = config.load({"replicas": 2, "state_dir": "/tmp/pgp-unit-exporters"}, "local")
    props = exporter_props(cfg, monitor_password="pw", admin_password="pw",
                           sql_dir=ROOT / "sql")
    pg = [p for p in props if p["name"].startswith("postgres-exporter")]
    holders = [p["name"] for p in pg if any(path.endswith("queries.yaml") for path in p["files"])]
    assert holders == ["postgres-exporter-primary"]
    (path, text), = ((k, v) for k, v in pg[0]["files"].items() if k.endswith("queries.yaml"))
    for p in pg[1:]:
        assert p["shared_files"][path] == hashlib.sha256(text.encode()).hexdigest()
