"""`pytest tests/infra --stack <name>` against a throw-away local stack made by `pulumi up`.

The testinfra suite runs in its own pytest process, with the stack's engine
environment (its file:// backend and passphrase) and its project folder, just
as a user runs it against `make up`'s stack.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine import ThrowawayStack
from tests.infra.throwaway import shared_stack

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(pytestconfig: pytest.Config) -> ThrowawayStack:
    return shared_stack(pytestconfig)


def test_the_testinfra_suite_passes_against_a_fresh_stack(stack: ThrowawayStack) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/infra", "--stack", stack.name,
         "--project-dir", str(stack.project), "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=ROOT, env={**stack.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600, check=False)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = [line for line in proc.stdout.splitlines() if line.startswith("PASSED ")]
    # Every check ran and passed: none skipped, none deselected.
    assert len(passed) >= 17 and " skipped" not in proc.stdout, tail
    print(f"tests/infra: {len(passed)} checks passed in {time.monotonic() - started:.1f}s")
