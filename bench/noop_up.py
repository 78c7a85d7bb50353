"""P2: a no-op `pulumi up` of an unchanged platform vs `up` of an empty program.

Both run through the same engine with the same offline settings; the empty
program is a Python project that registers nothing but its stack. Each is run
`repeats` times after a first `up`, and the medians are compared. The platform's
runs pass `--expect-no-changes`, so any change fails the run instead of being
timed. `up --yes` previews and then updates, running the program twice; a
context row repeats both with `--skip-preview`. Usage::

    .venv/bin/python -m bench.noop_up
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time

import yaml

from bench import common
from bench.common import Figure, Platform, Sizes
from tests.engine import engine_env
from tests.support import scratch_dir

_CHANGES = re.compile(r"^\s+[+~-]\s*\d+ to (create|update|delete|replace)", re.MULTILINE)


def _pulumi(argv: list[str], cwd: object, env: dict[str, str]) -> str:
    proc = subprocess.run(["pulumi", *argv, "--non-interactive"], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pulumi {' '.join(argv)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


MODES = {"": (), "--skip-preview": ("--skip-preview",)}


def empty_program_up(repeats: int) -> dict[str, list[float]]:
    """Seconds for each `up` of an empty Python program, by mode (after the first `up`)."""
    base = scratch_dir("pgp-bench-empty-")
    try:
        (base / "backend").mkdir()
        project = base / "project"
        project.mkdir()
        doc = {"name": "bench-empty", "runtime": {"name": "python", "options": {
            "toolchain": "pip", "virtualenv": str(common.ROOT / ".venv")}}}
        (project / "Pulumi.yaml").write_text(yaml.safe_dump(doc))
        (project / "__main__.py").write_text('"""An empty program."""\nimport pulumi  # noqa\n')
        env = engine_env(base, secrets.token_urlsafe(24))
        _pulumi(["stack", "init", "empty"], project, env)
        _pulumi(["up", "--yes", "--stack", "empty"], project, env)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for mode, extra in MODES.items():
            for _ in range(repeats):
                argv = ["up", "--yes", *extra, "--stack", "empty"]
                started = time.perf_counter()
                _pulumi(argv, project, env)
                times[mode].append(time.perf_counter() - started)
        _pulumi(["stack", "rm", "--yes", "--force", "--stack", "empty"], project, env)
        return times
    finally:
        shutil.rmtree(base, ignore_errors=True)


def platform_noop_up(p: Platform, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode, extra in MODES.items():
        for _ in range(repeats):
            started = time.perf_counter()
            proc = p.stack.up("--expect-no-changes", *extra)
            times[mode].append(time.perf_counter() - started)
            if _CHANGES.search(proc.stdout):
                raise RuntimeError(f"a no-op up reported changes:\n{proc.stdout[-3000:]}")
    return times


def run(sizes: Sizes, p: Platform) -> list[Figure]:
    ours = platform_noop_up(p, sizes.repeats)
    empty = empty_program_up(sizes.repeats)
    figs = []
    for mode in MODES:
        o, e = common.median(ours[mode]), common.median(empty[mode])
        label = f" {mode}" if mode else ""
        figs.append(common.report(Figure(
            "P2" + (" (context)" if mode else ""),
            f"no-op `up{label}` of the unchanged platform (median of {len(ours[mode])}), "
            "0 changes",
            common.secs(o), f"{common.secs(e)} (empty program)", common.x(o / e),
            "0 changes, ≤ 1.3×", None if mode else o / e <= 1.3,
            (p.pulumi_cmd("up", "--yes", "--expect-no-changes", *MODES[mode]),
             f"pulumi up --yes{label} --stack empty --non-interactive  # registers nothing"),
            note="runs: " + ", ".join(f"{t:.2f}" for t in ours[mode]) + " s vs "
                 + ", ".join(f"{t:.2f}" for t in empty[mode]) + " s"
                 + ("" if mode else "; `up` previews first, then updates: the program and "
                    "the dynamic provider start twice"))))
    return figs


def main() -> int:
    with common.platform() as p:
        run(Sizes(), p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
