"""pg-platform: read the stack's settings, build the platform, export its outputs."""

from infra import config
from infra.platform import Platform, export

export(Platform("platform", config.from_pulumi()))
