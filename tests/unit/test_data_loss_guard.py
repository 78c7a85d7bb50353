"""A change that would replace the primary or its database is refused in preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.backends.local_backup import BackupProvider
from infra.backends.local_postgres import DatabaseProvider, PostgresServerProvider
from infra.errors import ConfigError

PRIMARY = {"data_dir": "/srv/pgp/primary", "superuser": "postgres", "port": 5432,
           "allow_data_loss": False}
BACKUP = {"stanza": "main", "repo_path": "/srv/pgp/backups/repo", "allow_data_loss": False}
DATABASE = {"database": "platform", "app_role": "app", "replication_role": "replicator",
            "allow_data_loss": False}


@pytest.mark.parametrize(("provider", "olds", "key", "value", "named"), [
    (PostgresServerProvider(), PRIMARY, "superuser", "platform_owner", "bootstrap superuser"),
    (DatabaseProvider(), DATABASE, "replication_role", "repl2",
     "pg-platform:postgres.replication_role"),
    (DatabaseProvider(), DATABASE, "app_role", "app2", "pg-platform:postgres.app_role"),
    (BackupProvider(), BACKUP, "stanza", "other", "pg-platform:backup.stanza"),
])
def test_a_replacing_change_is_refused_naming_the_key(provider: Any, olds: dict[str, Any],
                                                      key: str, value: str, named: str) -> None:
    news = {**olds, key: value}
    with pytest.raises(ConfigError) as err:
        provider.diff("id", olds, news)
    message = str(err.value)
    assert named in message and repr(value) in message and "allow_data_loss" in message


def test_allow_data_loss_lets_the_replace_through() -> None:
    news = {**DATABASE, "app_role": "app2", "allow_data_loss": True}
    result = DatabaseProvider().diff("id", DATABASE, news)
    assert result.replaces == ["app_role"]


@pytest.mark.parametrize(("key", "value"), [("database", "renamed"), ("owner_role", "owner2")])
def test_the_database_and_its_owner_are_renamed_in_place(key: str, value: str) -> None:
    olds = {**DATABASE, "owner_role": "platform_owner"}
    result = DatabaseProvider().diff("id", olds, {**olds, key: value})
    assert result.changes and not result.replaces


def test_allow_data_loss_alone_changes_nothing() -> None:
    result = PostgresServerProvider().diff("id", {**PRIMARY, "running": True},
                                           {**PRIMARY, "allow_data_loss": True})
    assert not result.changes and not result.replaces


def test_a_new_data_dir_is_a_move_unless_the_target_holds_files(tmp_path: Path) -> None:
    """A new state_dir moves the cluster (infra/backends/local_move.py): no replace."""
    free = {**PRIMARY, "data_dir": str(tmp_path / "new" / "primary")}
    result = PostgresServerProvider().diff("id", PRIMARY, free)
    assert result.changes and not result.replaces
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "PG_VERSION").write_text("15\n")
    with pytest.raises(ConfigError, match=r"pg-platform:state_dir: moving the primary's data "
                                          r"directory .* already holds files"):
        PostgresServerProvider().diff("id", PRIMARY, {**PRIMARY, "data_dir": str(occupied)})
