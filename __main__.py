"""pg-platform: read the stack's settings, build the platform, export its outputs."""

import sys
from pathlib import Path

import pulumi

from infra import config
from infra.config.neighbours import check_neighbours
from infra.errors import ConfigError
from infra.platform import Platform, export

# The exit code that tells the engine the program already showed the user why
# it stopped (the language host's own constant).
SHOWN_TO_USER = 32

try:
    # The backend refuses what it cannot run (a postgres.version, replicas off
    # loopback) before it registers anything, with the same kind of message.
    settings = config.from_pulumi()
    # The program runs in the project folder, beside the other stacks' files.
    check_neighbours(settings, Path.cwd())
    platform = Platform("platform", settings)
except ConfigError as exc:
    # Only the message - key, value and what is allowed - with no traceback.
    pulumi.log.error(str(exc))
    sys.exit(SHOWN_TO_USER)
export(platform)
