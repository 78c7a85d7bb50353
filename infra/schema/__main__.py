"""Entry point for ``python -m infra.schema``."""

from __future__ import annotations

import sys

from infra.schema.cli import main

sys.exit(main())
