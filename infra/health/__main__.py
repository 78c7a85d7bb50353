"""``python -m infra.health``: an alias of ``python -m infra health`` (infra/cli.py)."""

from __future__ import annotations

import sys

from infra.cli import main

sys.exit(main(["health", *sys.argv[1:]]))
