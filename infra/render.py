"""Pure renderers: settings in, file texts out.

Shared by every backend, so a file rendered for the local stack is the file a
Docker container or an EC2 host receives, given the same settings and paths.
Templates hold no logic beyond loops and conditionals; quoting lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from infra.config import PlatformConfig
from infra.errors import RenderError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def pgquote(value: object) -> str:
    """Quote a value for postgresql.conf: single quotes, embedded quotes doubled."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError(f"value {text!r} spans lines; postgresql.conf values are one line")
    return "'" + text.replace("'", "''") + "'"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pgquote"] = pgquote
    return env


def render(template: str, **context: Any) -> str:
    """Render one template; a missing variable is an error, never an empty string."""
    try:
        return _env().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"templates/{template}: {exc}") from exc


@dataclass(frozen=True)
class HostPaths:
    """Where a host keeps its files; the only thing that differs between backends."""

    data_dir: str
    socket_dir: str


def preload_libraries(timescaledb: bool) -> tuple[str, ...]:
    return ("pg_stat_statements", "timescaledb") if timescaledb else ("pg_stat_statements",)


def postgresql_conf(cfg: PlatformConfig, paths: HostPaths, *, timescaledb: bool,
                    port: int | None = None) -> str:
    """postgresql.conf for a primary or replica; `port` overrides the configured one."""
    pg = cfg.postgres
    if port is not None:
        from dataclasses import replace

        pg = replace(pg, port=port)
    return render("postgresql.conf.j2", pg=pg, paths=paths,
                  preload=preload_libraries(timescaledb),
                  max_wal_senders=cfg.max_wal_senders)


def pg_hba_conf(cfg: PlatformConfig, networks: tuple[str, ...] = ("127.0.0.1/32",)) -> str:
    """pg_hba.conf: scram-sha-256 for every entry, from the given networks only."""
    return render("pg_hba.conf.j2", networks=networks,
                  replication_role=cfg.postgres.replication_role)
