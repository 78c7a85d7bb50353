"""The drift findings (infra/hostctl/drift.py) on plain files: names and paths, never values."""

from __future__ import annotations

from pathlib import Path

from infra.hostctl import drift


def test_a_changed_missing_and_same_file(tmp_path: Path) -> None:
    same, changed = tmp_path / "same.conf", tmp_path / "changed.conf"
    same.write_text("a = 1\n")
    changed.write_text("a = 1\nauth_type = trust\n")
    found = drift.changed_files({str(same): "a = 1\n", str(changed): "a = 1\n",
                                 str(tmp_path / "gone.conf"): "x\n",
                                 str(tmp_path / "unknown.conf"): None})
    assert found == [f"{changed}: differs from the rendered file in state (edited by hand?)",
                     f"{tmp_path / 'gone.conf'}: missing (the rendered file is in state)"]
    assert not any("trust" in f for f in found)


def test_auto_conf_overrides_are_named_and_cleared(tmp_path: Path) -> None:
    assert drift.auto_conf_drift(tmp_path) == []  # no file: nothing set
    (tmp_path / drift.AUTO_CONF).write_text(drift.AUTO_CONF_HEADER + "work_mem = '77MB'\n"
                                            "primary_conninfo = 'password=secret'\n")
    found = drift.auto_conf_drift(tmp_path)
    assert [f.split(": ", 1)[1].split(" (")[0] for f in found] == [
        "overrides work_mem", "overrides primary_conninfo"]
    assert not any("77MB" in f or "secret" in f for f in found)
    assert drift.clear_auto_conf(tmp_path) is True
    assert drift.auto_conf_drift(tmp_path) == []
    assert drift.clear_auto_conf(tmp_path) is False
