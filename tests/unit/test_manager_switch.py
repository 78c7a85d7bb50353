"""Switching `ha.manager` on a local stack that holds a cluster is refused before anything
is made: the other manager's resources, and the data directory with them, would be
deleted and an empty cluster started in their place."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import config
from infra.backends.local import refuse_manager_switch
from infra.errors import ConfigError


def cfg(state: Path, manager: str, **extra: object) -> config.PlatformConfig:
    return config.load({"state_dir": str(state), "ha": {"manager": manager}, **extra}, "t")


def cluster(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "PG_VERSION").write_text("15\n")


@pytest.mark.parametrize(("made_in", "manager", "made_by"),
                         [("primary", "patroni", "none"), ("pg-1", "none", "patroni")])
def test_a_switch_over_an_existing_cluster_is_refused(tmp_path: Path, made_in: str,
                                                      manager: str, made_by: str) -> None:
    cluster(tmp_path / made_in)
    with pytest.raises(ConfigError) as err:
        refuse_manager_switch(cfg(tmp_path, manager))
    text = str(err.value)
    assert text.startswith(f"pg-platform:ha.manager={manager}: ")
    assert f"made with ha.manager={made_by}" in text and "allow_data_loss" in text


def test_the_same_manager_a_fresh_stack_or_an_opt_in_pass(tmp_path: Path) -> None:
    cluster(tmp_path / "primary")
    refuse_manager_switch(cfg(tmp_path, "none"))
    refuse_manager_switch(cfg(tmp_path, "patroni", allow_data_loss=True))
    refuse_manager_switch(cfg(tmp_path / "fresh", "patroni"))
