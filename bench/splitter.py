"""Splitter benchmark (P7): 200,000 statements (about 22 MB) split into statements.

Measures, in the same run, on the same text:

* pg-platform's splitter: the scan for placeholders, COPY data and psql lines,
  then PostgreSQL's grammar through pglast, down to Statement objects with
  their file lines (``infra.schema.sqltext.split``, what ``apply`` runs);
* the baseline: the engine's previous hand-written splitter
  (``bench/legacy_splitter.py``, commit 184922a), which knew no parentheses and
  no ``BEGIN ATOMIC``, so it is given text it can split;
* for context, ``pglast.split`` alone.

The goal is at most 2x the baseline. Never asserts on time. Usage::

    .venv/bin/python bench/splitter.py [--statements 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pglast  # noqa: E402

from bench import legacy_splitter  # noqa: E402
from bench.common import Figure, median, report, timed  # noqa: E402
from infra.schema import sqltext  # noqa: E402

# A mix like a real schema-plus-data migration: inserts with quoted text
# (quotes, semicolons, E'' escapes), DDL, comments, dollar-quoted bodies.
_SHAPES = (
    "INSERT INTO public.events (tenant_id, kind, payload) VALUES "
    "({n}, 'login;ok', E'it\\'s {n}') ON CONFLICT DO NOTHING;\n",
    "-- row {n}: a comment with ; and 'quotes'\n"
    "UPDATE public.users SET name = 'O''Brien {n}', seen = now() WHERE id = {n};\n",
    "CREATE INDEX IF NOT EXISTS events_{n} ON public.events (tenant_id, kind, occurred_at);\n",
    "CREATE FUNCTION f_{n}(i int) RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN i; END $fn$;\n",
    "/* block {n} */ SELECT \"quoted;ident\", {n} FROM public.t WHERE v <> 'a;b' AND w;\n",
    "INSERT INTO public.audit (n, what, at) VALUES ({n}, 'insert $1 ${{x}}', now());\n",
)


def corpus(statements: int) -> str:
    return "".join(_SHAPES[n % len(_SHAPES)].format(n=n) for n in range(statements))


def measure(statements: int, repeat: int) -> tuple[float, float, float, int, int]:
    text = corpus(statements)
    ours = [timed(lambda: sqltext.split(text, "bench.sql"))[0] for _ in range(repeat)]
    base = [timed(lambda: legacy_splitter.split(text))[0] for _ in range(repeat)]
    raw = [timed(lambda: list(pglast.split(text, with_parser=True, only_slices=True)))[0]
           for _ in range(repeat)]
    n_ours = len(sqltext.split(text, "bench.sql"))
    n_base = len(legacy_splitter.split(text))
    assert n_ours == n_base == statements, (n_ours, n_base, statements)
    return median(ours), median(base), median(raw), len(text.encode()), n_ours


def run(statements: int = 200_000, repeat: int = 3) -> list[Figure]:
    ours, base, raw, size, n = measure(statements, repeat)
    command = f".venv/bin/python bench/splitter.py --statements {statements} --repeat {repeat}"
    return [report(Figure(
        "P7", f"split {n:,} statements ({size / 1e6:.1f} MB) with file lines",
        f"{ours:.2f} s", f"{base:.2f} s (previous hand-written splitter)",
        f"{ours / base:.2f}×", "≤ 2×", ours / base <= 2.0, (command,),
        note=f"pglast.split alone: {raw:.2f} s; median of {repeat} runs each"))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--statements", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    run(args.statements, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
