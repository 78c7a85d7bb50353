"""The other stack files beside this one: their ports and state folders are taken.

Two stacks on one machine (local and dev both publish on loopback) must not
reach for the same port or share a state folder. The other stacks' settings
are read from their `Pulumi.<stack>.yaml` with their defaults filled in; a
file that does not load (another machine's secrets) is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from infra.config.paths import resolve
from infra.config.platform import PlatformConfig, decode, exporter_ports, load
from infra.config.ports import service_ports
from infra.config.section import key
from infra.errors import ConfigError

logger = logging.getLogger(__name__)
ON_THIS_MACHINE = ("local", "docker")


def other_stacks(project_dir: Path, stack: str) -> dict[str, PlatformConfig]:
    found: dict[str, PlatformConfig] = {}
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        name = path.name[len("Pulumi."):-len(".yaml")]
        if name == stack:
            continue
        try:
            doc: Any = yaml.safe_load(path.read_text()) or {}
            found[name] = load(decode(doc.get("config") or {}), name)
        except (OSError, yaml.YAMLError, ConfigError, AttributeError) as exc:
            logger.warning("%s is not checked for port and folder collisions: %s", path, exc)
    return found


def _ports(cfg: PlatformConfig) -> list[tuple[int, str]]:
    return service_ports(cfg.backend, cfg.replicas, cfg.postgres, cfg.pooler, cfg.monitoring,
                         exporter_ports(cfg))


def check_neighbours(cfg: PlatformConfig, project_dir: Path) -> None:
    """:raises ConfigError: naming this stack's key and the other stack's file."""
    if cfg.backend not in ON_THIS_MACHINE:
        return
    mine = _ports(cfg)
    my_dir = resolve(cfg.state_dir, cfg.stack)
    for name, other in other_stacks(project_dir, cfg.stack).items():
        if other.backend in ("local",) and cfg.backend == "local":
            theirs_dir = resolve(other.state_dir, name)
            if my_dir == theirs_dir or theirs_dir in my_dir.parents or \
                    my_dir in theirs_dir.parents:
                raise ConfigError(f"{key('state_dir')}={cfg.state_dir or str(my_dir)!r}: "
                                  f"overlaps stack {name!r}'s folder {theirs_dir} "
                                  f"(Pulumi.{name}.yaml); choose a folder of this stack's own")
        if other.backend not in ON_THIS_MACHINE:
            continue
        theirs = {port: what for port, what in _ports(other)}
        for port, what in mine:
            if port in theirs:
                raise ConfigError(f"{what}={port}: stack {name!r} (Pulumi.{name}.yaml) uses "
                                  f"it too, as {theirs[port]}; choose a free port")
