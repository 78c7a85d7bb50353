"""Every backend by its `pg-platform:backend` name; the only place that picks one.

A backend's module is imported when it is picked, not before: the aws and docker
modules pull in pulumi_aws and pulumi_docker (about 0.8 s on this machine), and the
program runs twice per `pulumi up` (preview, then update), so a local stack would pay
for them twice without using either.
"""

from __future__ import annotations

import importlib

from infra.backends.base import Backend, check_version
from infra.config import BACKENDS, PlatformConfig
from infra.errors import ConfigError

MODULES = {"local": "infra.backends.local", "docker": "infra.backends.docker",
           "aws": "infra.backends.aws"}
assert tuple(MODULES) == BACKENDS, "infra.config.BACKENDS and the registry disagree"


def get(name: str) -> Backend:
    if name not in MODULES:
        raise ConfigError(f"pg-platform:backend={name!r}: allowed values are "
                          f"{', '.join(MODULES)}")
    backend: Backend = importlib.import_module(MODULES[name]).BACKEND
    if backend.name != name:
        raise AssertionError(f"{MODULES[name]}.BACKEND is named {backend.name!r}, not {name!r}")
    return backend


def for_stack(cfg: PlatformConfig) -> Backend:
    """The stack's backend, once it has agreed to run the stack's PostgreSQL version."""
    backend = get(cfg.backend)
    check_version(backend, cfg)
    return backend
