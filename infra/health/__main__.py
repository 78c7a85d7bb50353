"""Entry point: `python -m infra.health --stack local [--json]`."""

from __future__ import annotations

import sys

from infra.health.cli import main

sys.exit(main())
