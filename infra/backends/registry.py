"""Every backend by its `pg-platform:backend` name; the only place that picks one."""

from __future__ import annotations

from infra.backends import aws, docker, local
from infra.backends.base import Backend, check_version
from infra.config import BACKENDS, PlatformConfig
from infra.errors import ConfigError

REGISTRY: dict[str, Backend] = {b.name: b for b in (local.BACKEND, docker.BACKEND, aws.BACKEND)}
assert tuple(REGISTRY) == BACKENDS, "infra.config.BACKENDS and the registry disagree"


def get(name: str) -> Backend:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"pg-platform:backend={name!r}: allowed values are "
                          f"{', '.join(REGISTRY)}") from None


def for_stack(cfg: PlatformConfig) -> Backend:
    """The stack's backend, once it has agreed to run the stack's PostgreSQL version."""
    backend = get(cfg.backend)
    check_version(backend, cfg)
    return backend
