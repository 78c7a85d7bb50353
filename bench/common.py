"""Shared helpers for the benchmarks: figures, timing, commands, sizes and stacks.

Every measure produces `Figure`s: pg-platform's number, a baseline measured
in the same run, their ratio and the goal, and the commands that produced
both. Nothing here asserts on time; a missed goal is a row in the table.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import hostctl  # noqa: E402
from tests.engine import ThrowawayStack  # noqa: E402

T = TypeVar("T")
PY = str(ROOT / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Sizes:
    """How big each measure runs; `quick` is for development on a busy machine."""

    tenants: int = 1000
    tenants_big: int = 10000
    pgbench_seconds: int = 20
    pgbench_scale: int = 10
    lag_seconds: int = 30
    backup_mb: int = 2048
    backup_tenants: int = 1000
    repeats: int = 3
    statements: int = 200_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(tenants=50, tenants_big=500, pgbench_seconds=5, pgbench_scale=2,
                   lag_seconds=8, backup_mb=100, backup_tenants=50, repeats=2,
                   statements=20_000)


@dataclass(frozen=True)
class Figure:
    """One row of the results table.

    `ratio` is written the way the goal reads: for "at most 1.5x" it is
    ours/baseline of a time, for "at least 0.8x the speed" baseline time over ours. `met` is None
    where there is no goal (context rows).
    """

    measure: str
    what: str
    ours: str
    baseline: str
    ratio: str
    goal: str
    met: bool | None
    commands: tuple[str, ...] = ()
    note: str = ""

    def show(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        lines = [f"[{self.measure}] {self.what}: {self.ours}; baseline {self.baseline}; "
                 f"ratio {self.ratio} (goal {self.goal}: {verdict})"]
        lines += [f"    command: {c}" for c in self.commands]
        if self.note:
            lines.append(f"    note: {self.note}")
        return "\n".join(lines)


def report(fig: Figure) -> Figure:
    print(fig.show(), flush=True)
    return fig


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def x(value: float) -> str:
    return f"{value:.2f}×"


def secs(value: float) -> str:
    return f"{value:.2f} s"


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 3600, as_service: bool = False,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (as the postgres OS user when `as_service` and we are root)."""
    cmd = hostctl.service_cmd(argv) if as_service else list(argv)
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=cwd or "/")
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def shown(argv: Sequence[str]) -> str:
    """A command as printed in the results: passwords never reach argv, so it is all of it."""
    return shlex.join(str(a) for a in argv)


def platform_ports() -> int:
    """A primary port whose derived ports are free: replicas +1 (on 127.0.0.2-3), pooler
    +1000, exporters +2000..+2005 and +3000. Chosen below the ephemeral range (32768+),
    so that no client connection takes one of them meanwhile."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 29000)
        wanted = [("127.0.0.1", port), ("127.0.0.2", port + 1), ("127.0.0.3", port + 1),
                  ("127.0.0.1", port + 1000), ("127.0.0.1", port + 3000),
                  *(("127.0.0.1", port + 2000 + i) for i in range(6))]
        if all(hostctl.port_free(h, q) for h, q in wanted):
            return port
    raise RuntimeError("no free port set for a benchmark platform")


TENANTS = [{"slug": "acme", "name": "Acme Corp", "plan": "premium"},
           {"slug": "globex", "name": "Globex", "plan": "standard"},
           {"slug": "initech", "name": "Initech", "plan": "free"}]


@dataclass
class Platform:
    """A throw-away local stack as `make up` builds it: 2 replicas, pooler, backups, 3 tenants."""

    stack: ThrowawayStack
    port: int
    up_seconds: float = 0.0
    up_output: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)

    def pulumi_cmd(self, *args: str) -> str:
        return shown(["pulumi", *args, "--stack", self.stack.name, "--non-interactive"])


def new_platform(replicas: int = 2) -> Platform:
    port = platform_ports()
    stack = ThrowawayStack("bench", {"postgres": {"port": port}, "replicas": replicas,
                                     "tenants": TENANTS})
    stack.init()
    return Platform(stack=stack, port=port)


def bring_up(p: Platform) -> None:
    p.up_seconds, proc = timed(lambda: p.stack.up())
    p.up_output = proc.stdout
    p.outputs = p.stack.outputs()


@contextlib.contextmanager
def platform(existing: Platform | None = None) -> Iterator[Platform]:
    """The given running platform, or a new one that is removed afterwards."""
    if existing is not None:
        yield existing
        return
    p = new_platform()
    try:
        bring_up(p)
        yield p
    finally:
        p.stack.remove()


_ENV_NAMES = {"dbname": "PGDATABASE", "application_name": "PGAPPNAME"}


def libpq_env(dsn: str) -> dict[str, str]:
    """PG* variables for a DSN (TLS settings included), so no password is in a command."""
    from psycopg.conninfo import conninfo_to_dict

    return {_ENV_NAMES.get(k, "PG" + k.upper()): str(v)
            for k, v in conninfo_to_dict(dsn).items() if v is not None}


def platform_main(run: Callable[[Sizes, Platform], object], doc: str | None,
                  argv: Sequence[str] | None = None) -> int:
    """`python bench/<measure>.py [--quick]` for a measure that runs on one platform."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    args = ap.parse_args(argv)
    with platform() as p:
        run(Sizes.quick() if args.quick else Sizes(), p)
    return 0
