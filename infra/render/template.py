"""The one Jinja environment and the quoting helpers every rendered file uses.

Templates hold no logic beyond loops and conditionals; quoting lives here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from infra.errors import RenderError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def pgquote(value: object) -> str:
    """Quote a value for postgresql.conf: single quotes, embedded quotes doubled."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise RenderError(f"value {text!r} spans lines; postgresql.conf values are one line")
    return "'" + text.replace("'", "''") + "'"


def ini(value: object) -> str:
    """A value for pgbouncer.ini: one line, no comment or quote characters to misread."""
    text = str(value)
    if any(c in text for c in "\n\r;#'\" ") or not text:
        raise RenderError(f"value {text!r} cannot be written to pgbouncer.ini: it must be "
                          "non-empty, one line, without spaces, quotes, ';' or '#'")
    return text


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
    env.filters["ini"] = ini
    return env


def render(template: str, **context: Any) -> str:
    """Render one template; a missing variable is an error, never an empty string."""
    try:
        return _env().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"templates/{template}: {exc}") from exc
