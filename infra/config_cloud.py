"""Settings of the dev (Docker) and prod (AWS) backends.

Kept apart from infra/config.py so the backends' settings can grow without
crowding the shared ones. Each parser returns None when its backend is not the
stack's, after checking that no stray keys were given.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import Section


@dataclass(frozen=True)
class DockerSettings:
    image: str = "timescale/timescaledb-ha:pg15"


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"


def parse_docker(sec: Section, backend: str) -> DockerSettings | None:
    settings = DockerSettings(image=sec.text("image", DockerSettings.image))
    sec.finish()
    return settings if backend == "docker" else None


def parse_aws(sec: Section, backend: str) -> AwsSettings | None:
    settings = AwsSettings(region=sec.text("region", AwsSettings.region))
    sec.finish()
    return settings if backend == "aws" else None
