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


class MigrationRefused(MigrationError):
    """The engine refused to run: the files or the history are not fit to apply.

    Nothing ran. The CLI exits 1 for these, and 2 for errors while running.
    """


class ChecksumMismatch(MigrationRefused):
    """An already-applied versioned migration was edited."""
