"""The host tier's systemctl stand-in reads unit files honestly (tests/hosts/guest/shim_units.py).

A masked unit must refuse to start, as systemd's does, and a unit relying on a
[Service] key the stand-in does not emulate must stop its start with an error
rather than run without it. The module is the guest's own file, loaded by path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SHIM = Path(__file__).resolve().parents[1] / "hosts" / "guest" / "shim_units.py"


@pytest.fixture()
def units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("shim_units_under_test", SHIM)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    monkeypatch.setattr(mod, "UNIT_DIRS", (str(etc), str(lib)))
    monkeypatch.setattr(mod, "MASK_DIR", str(etc))
    return mod


def _unit(units: ModuleType, name: str, service: str) -> None:
    Path(units.UNIT_DIRS[1], name).write_text(f"[Unit]\nDescription=x\n\n[Service]\n{service}")


def test_a_masked_unit_refuses_and_unmask_brings_it_back(
        units: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    _unit(units, "etcd.service", "ExecStart=/usr/bin/etcd\n")
    assert units.load("etcd.service")["ExecStart"] == ["/usr/bin/etcd"]
    units.mask("etcd.service")
    units.mask("etcd.service")          # again: no error, as systemd
    with pytest.raises(SystemExit) as exc:
        units.load("etcd.service")
    assert exc.value.code == 1 and "is masked" in capsys.readouterr().err
    units.unmask("etcd.service")
    assert units.load("etcd.service")["ExecStart"] == ["/usr/bin/etcd"]


def test_mask_refuses_to_hide_a_real_unit_file(units: ModuleType) -> None:
    Path(units.MASK_DIR, "patroni.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(SystemExit):
        units.mask("patroni.service")


def test_an_unemulated_service_key_stops_the_start(
        units: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    _unit(units, "x.service", "ExecStart=/bin/true\nDynamicUser=yes\nUser=postgres\n")
    with pytest.raises(SystemExit):
        units.check_keys("x.service", units.load("x.service"))
    assert "DynamicUser=" in capsys.readouterr().err


def test_known_and_knowingly_ignored_keys_pass(units: ModuleType) -> None:
    # Debian's haproxy.service's keys (bookworm), which the Patroni tier starts.
    _unit(units, "haproxy.service",
          "EnvironmentFile=-/etc/default/haproxy\nBindReadOnlyPaths=/dev/log:/x\n"
          'Environment="CONFIG=/etc/haproxy/haproxy.cfg"\nExecStart=/usr/sbin/haproxy -Ws\n'
          "ExecReload=/bin/kill -USR2 $MAINPID\nKillMode=mixed\nRestart=always\n"
          "SuccessExitStatus=143\nType=notify\n")
    units.check_keys("haproxy.service", units.load("haproxy.service"))
