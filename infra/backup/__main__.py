"""Entry point of `python -m infra.backup`."""

from __future__ import annotations

import sys

from infra.backup.cli import main

sys.exit(main())
