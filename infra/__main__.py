"""Entry point for ``python -m infra`` (infra/cli.py)."""

from __future__ import annotations

import sys

from infra.cli import main

sys.exit(main())
