"""The installed server's own settings catalogue, read by running its binaries.

`postgres --describe-config` gives every setting's name, context, type, min
and max; pg_settings of a throw-away single-user instance adds units and enum
values, which --describe-config leaves out. Both run as the service user (the
server refuses root). infra/pgparams.py validates against what these return.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from infra.errors import ProcessError
from infra.hostctl.files import chown_service
from infra.hostctl.proc import service_cmd

_SETTINGS_QUERY = ("COPY (SELECT name, coalesce(unit, ''), array_to_string(enumvals, ',') "
                   "FROM pg_settings) TO STDOUT;\n")


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        return subprocess.run(service_cmd(argv), input=stdin, capture_output=True, text=True,
                              timeout=120, check=True).stdout
    except subprocess.SubprocessError as exc:
        raise ProcessError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: {exc}") from None


def describe_config(binary: Path) -> list[list[str]]:
    """`postgres --describe-config`: one tab-separated row per setting."""
    return [line.split("\t") for line in _run([str(binary), "--describe-config"]).splitlines()]


def units_and_enums(binary: Path) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """name -> (unit, enum values), from pg_settings of a single-user throw-away cluster."""
    with tempfile.TemporaryDirectory(prefix="pgp-guc-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        chown_service(Path(tmp))
        data = Path(tmp) / "d"
        _run([str(binary.parent / "initdb"), "-D", str(data), "-A", "peer", "-U", "postgres",
              "--no-sync"])
        out = _run([str(binary), "--single", "-D", str(data), "-j", "postgres"],
                   _SETTINGS_QUERY)
    found: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) == 3:
            found[f[0]] = (f[1] or None, tuple(v for v in f[2].split(",") if v and v != "\\N"))
    return found
