"""The layout's rules, read from the code itself (ast), so they cannot quietly erode.

- Only infra/backends/ and infra/hostctl/ start or signal processes.
- Only infra/backends/ imports a backend module (the contract and the registry
  are not backends: infra.backends, .base and .registry).
- infra/ has no import cycles and no imports inside functions.
- Every module stays under about 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROCESS_MODULES = {"subprocess", "signal", "psutil", "multiprocessing", "pty"}
PROCESS_CALLS = {"kill", "killpg", "waitpid", "fork", "system", "popen", "spawnv", "execv",
                 "execvp", "execve", "posix_spawn"}
NOT_BACKENDS = {"infra.backends", "infra.backends.base", "infra.backends.registry"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(INFRA.rglob("*.py"))}


def imports(tree: ast.Module, *, top_level_only: bool) -> set[str]:
    """Modules a file imports; `from a import b` counts as a.b when a.b is a module."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # `if TYPE_CHECKING:` blocks and try/except imports at module level
        nodes = [n for top in tree.body for n in ast.walk(top)
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in MODULES)
    return found


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def os_process_calls(tree: ast.Module) -> set[str]:
    return {f"os.{n.attr}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "os" and n.attr in PROCESS_CALLS}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_backends_and_hostctl_run_processes(name: str) -> None:
    # infra.hostagent runs on the dev and prod hosts themselves, alone (it may import
    # nothing from infra, so not infra.hostctl either).
    if name.startswith(("infra.backends", "infra.hostctl", "infra.hostagent")):
        return
    tree = parsed(MODULES[name])
    used = {m for m in imports(tree, top_level_only=False)
            if m.split(".")[0] in PROCESS_MODULES} | os_process_calls(tree)
    assert not used, f"{name} starts or signals processes ({', '.join(sorted(used))}); " \
                     "that belongs in infra/hostctl/"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_backends_import_backends(name: str) -> None:
    if name.startswith("infra.backends"):
        return
    found = {m for m in imports(parsed(MODULES[name]), top_level_only=False)
             if m.startswith("infra.backends.") and m not in NOT_BACKENDS}
    assert not found, f"{name} imports backend modules {sorted(found)}; use " \
                      "infra.backends.registry and the contract in infra/backends/base.py"


def test_no_import_cycles() -> None:
    graph = {name: {m for m in imports(parsed(path), top_level_only=True) if m in MODULES}
             for name, path in MODULES.items()}
    # Importing a.b.c runs a and a.b first: a package's own re-exports of its leaves
    # are not a cycle, a leaf importing its package root (or another package that
    # imports it back) is.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own leaves
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_leaf_imports_its_package_root(name: str) -> None:
    """infra/config's leaves, say, import each other, never a name from infra.config itself."""
    parts = name.split(".")
    ancestors = {".".join(parts[:i]) for i in range(2, len(parts))}
    found: set[str] = set()
    for node in ast.walk(parsed(MODULES[name])):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in ancestors)
        elif isinstance(node, ast.ImportFrom) and node.module in ancestors:
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" not in MODULES)
    assert not found, f"{name} imports from its package root: {sorted(found)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_imports_inside_functions(name: str) -> None:
    tree = parsed(MODULES[name])
    inner = [f"line {n.lineno}" for fn in ast.walk(tree)
             if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not inner, f"{name} imports inside a function ({', '.join(inner)})"


@pytest.mark.parametrize("path", [*sorted(ROOT.glob("infra/**/*.py")), ROOT / "__main__.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"
