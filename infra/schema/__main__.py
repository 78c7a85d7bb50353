"""``python -m infra.schema``: an alias of ``python -m infra schema`` (infra/cli.py)."""

from __future__ import annotations

import sys

from infra.cli import main

sys.exit(main(["schema", *sys.argv[1:]]))
