"""Unit files for the host tier's systemctl stand-in (tests/hosts/guest/systemctl).

This half reads what systemd would read: a unit's sections with its drop-ins
(an empty assignment resets a list), Environment and EnvironmentFile, the
expansion of `$X` and `${X}` in command lines, ConditionPathExists, time spans,
and masks (`systemctl mask` links /etc/systemd/system/<unit> to /dev/null, as
systemd does; a masked unit refuses to start). The other half runs processes.
Installed beside the stand-in in each host (tests/hosts/hostns.py); the guest's
own python3 (Debian's) runs it, so it uses the standard library only.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from typing import NoReturn

Section = dict[str, list[str]]
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
MASK_DIR = "/etc/systemd/system"


def fail(msg: str, code: int = 1) -> NoReturn:
    print(f"systemctl (pg-platform host tier shim): {msg}", file=sys.stderr)
    sys.exit(code)


# [Service] keys the other half acts on.
HANDLED = frozenset({
    "Type", "ExecStartPre", "ExecStart", "ExecReload", "ExecStop", "User", "Group",
    "Environment", "EnvironmentFile", "RuntimeDirectory", "RuntimeDirectoryMode",
    "KillSignal", "KillMode", "PIDFile", "LimitNOFILE", "RemainAfterExit", "Restart",
    "RestartSec", "WorkingDirectory"})
# Keys that change nothing the tier checks, each for a reason: timeouts (stop waits a
# fixed time), scheduling and OOM weights, sandboxing, exit-status bookkeeping, and
# IgnoreSIGPIPE (a Python parent already passes SIGPIPE ignored to its children, which
# is systemd's default). Any other key stops the start: the unit relies on something
# this stand-in would silently not do.
IGNORED = frozenset({
    "TimeoutStartSec", "TimeoutStopSec", "TimeoutSec", "OOMScoreAdjust", "Nice",
    "IOSchedulingClass", "IOSchedulingPriority", "ProtectSystem", "ProtectHome",
    "NoNewPrivileges", "BindReadOnlyPaths", "SuccessExitStatus", "RestartPreventExitStatus",
    "IgnoreSIGPIPE"})


def check_keys(name: str, svc: Section) -> None:
    unknown = sorted(set(svc) - HANDLED - IGNORED)
    if unknown:
        fail(f"{name}: [Service] {', '.join(k + '=' for k in unknown)} not handled by the "
             "host tier's shim (tests/hosts/guest/shim_units.py)")


def unit_name(name: str) -> str:
    return name if "." in name else name + ".service"


def masked(name: str) -> bool:
    path = os.path.join(MASK_DIR, name)
    return os.path.islink(path) and os.path.realpath(path) == "/dev/null"


def mask(name: str) -> None:
    """systemd's mask: a link to /dev/null that hides the unit's real file."""
    path = os.path.join(MASK_DIR, name)
    if masked(name):
        return
    if os.path.lexists(path):
        fail(f"Failed to mask unit: File {path} already exists.")
    os.symlink("/dev/null", path)


def unmask(name: str) -> None:
    if masked(name):
        os.unlink(os.path.join(MASK_DIR, name))


def load(name: str, section: str = "Service") -> Section:
    """The unit's section as {key: [values]}, drop-ins applied; see `load_all`."""
    return load_all(name).get(section, {})


def load_all(name: str) -> dict[str, Section]:
    if masked(name):
        fail(f"Unit {name} is masked.")
    for d in UNIT_DIRS:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            sections: dict[str, Section] = {}
            parse(os.path.realpath(path), sections)
            for dd in UNIT_DIRS:
                drop = os.path.join(dd, name + ".d")
                if os.path.isdir(drop):
                    for conf in sorted(os.listdir(drop)):
                        if conf.endswith(".conf"):
                            parse(os.path.join(drop, conf), sections)
            return sections
    fail(f"Unit {name} not found.", 5)


def parse(path: str, sections: dict[str, Section]) -> None:
    current: Section = {}
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []      # systemd: an empty assignment resets the list


def one(svc: Section, key: str, default: str = "") -> str:
    values = svc.get(key) or [default]
    return values[-1]


def environment(svc: Section) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8"}
    for raw in svc.get("Environment", []):
        for item in shlex.split(raw):
            k, _, v = item.partition("=")
            env[k] = v
    for raw in svc.get("EnvironmentFile", []):
        optional = raw.startswith("-")
        path = raw.lstrip("-")
        if not os.path.exists(path):
            if optional:
                continue
            fail(f"EnvironmentFile {path} is missing")
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, _, v = line.partition("=")
                    env[k.strip()] = " ".join(shlex.split(v)) if v else ""
    return env


def command(line: str, env: dict[str, str], mainpid: int | None = None) -> list[str]:
    """systemd's expansion: `$X` alone is split into words, `${X}` is substituted."""
    line = line.lstrip("-@+!:")
    if mainpid is not None:
        env = {**env, "MAINPID": str(mainpid)}
    words: list[str] = []
    for word in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            words.extend(env.get(m.group(1), "").split())
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                lambda g: env.get(g.group(1), ""), word))
    return words


def condition_ok(name: str) -> bool:
    for raw in load(name, "Unit").get("ConditionPathExists", []):
        negate = raw.startswith("!")
        if os.path.exists(raw.lstrip("!")) == negate:
            return False
    return True


def seconds(text: str) -> float:
    """systemd time spans as the units here write them: 30, 30s, 2min, 1h."""
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", text):
        total += float(num) * {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600,
                               "ms": 0.001}[unit]
    return total
