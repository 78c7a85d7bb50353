"""A progress bar for tenant migrations, shown only to a person at a terminal.

It writes to stderr and only when stderr is a TTY, so logs, CI output and
Pulumi's captured output stay free of carriage returns.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    """Callable as ``(done, total)``; redraws at most ten times a second."""

    def __init__(self, label: str = "tenants", stream: TextIO | None = None,
                 width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.width = width
        self._last = 0.0
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if done < total and now - self._last < 0.1:
                return
            self._last = now
            filled = self.width * done // total
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} "
                              f"{now - self._started:5.1f}s")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
