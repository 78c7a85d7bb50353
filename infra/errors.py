"""The project's exceptions: one base class, a few children.

Every message names the offending file or config key, the value, and what is
allowed, so that a user can fix the input without reading the code.
"""

from __future__ import annotations


class PlatformError(Exception):
    """Base class of every error pg-platform raises on purpose."""


class ConfigError(PlatformError):
    """A stack setting is missing or invalid."""


class RenderError(PlatformError):
    """A template could not be rendered from the settings."""


class ProcessError(PlatformError):
    """A server process (postgres, pgbouncer, pgbackrest) failed."""


class MigrationError(PlatformError):
    """A migration failed; nothing of it was recorded as applied."""


class ChecksumMismatch(MigrationError):
    """An already-applied versioned migration was edited."""
