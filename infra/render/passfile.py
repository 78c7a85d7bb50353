"""libpq passfiles (~/.pgpass): one escaping rule for every host that keeps one."""

from __future__ import annotations

from infra.errors import RenderError


def _field(value: str) -> str:
    if "\n" in value:
        raise RenderError("a passfile field cannot span lines")
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass(entries: list[tuple[str, str, str, str, str]]) -> str:
    """A libpq passfile: host:port:database:user:password lines, escaped as libpq reads them."""
    lines = [":".join(_field(f) for f in entry) for entry in entries]
    return "\n".join(lines) + "\n"


def pgpass_line(host: str, port: int, user: str, password: str) -> str:
    """A libpq password-file line for every database (`replication` included)."""
    return pgpass([(host, str(port), "*", user, password)])
