"""``python -m infra.backup``: an alias of ``python -m infra backup`` (infra/cli.py)."""

from __future__ import annotations

import sys

from infra.cli import main

sys.exit(main(["backup", *sys.argv[1:]]))
