"""Every test that starts the Pulumi engine is marked `engine`, so `-m "not engine"` is fast.

Read from the test modules themselves (ast): a test starts the engine when it
names ThrowawayStack, stack_up or shared_stack, or takes a fixture of its
module that does (directly or through another fixture).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = {"ThrowawayStack", "stack_up", "shared_stack", "throwaway_stack"}
MODULES = sorted((ROOT / "tests" / "integration").glob("test_*.py"))


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _marked(decorators: list[ast.expr]) -> bool:
    return any("engine" in _names(d) for d in decorators)


def _body_names(fn: ast.FunctionDef) -> set[str]:
    """Names used in the body, not in annotations (a `stack: ThrowawayStack` hint is no call)."""
    return set().union(*(_names(stmt) for stmt in fn.body))


def unmarked_engine_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                             for t in n.targets) and "engine" in _names(n.value)
           for n in tree.body):
        return []
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    fixtures = {f.name: f for f in fns if any("fixture" in _names(d) for d in f.decorator_list)}
    engine_fixtures: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, fn in fixtures.items():
            uses = _body_names(fn) & ENGINE or {a.arg for a in fn.args.args} & engine_fixtures
            if name not in engine_fixtures and uses:
                engine_fixtures.add(name)
                changed = True
    return [fn.name for fn in fns if fn.name.startswith("test_")
            and (_body_names(fn) & ENGINE or {a.arg for a in fn.args.args} & engine_fixtures)
            and not _marked(fn.decorator_list)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_engine_tests_are_marked(path: Path) -> None:
    assert unmarked_engine_tests(path) == [], f"{path.name}: mark these @pytest.mark.engine"
