"""The shape of the code, held by its imports (read with `ast`, nothing is imported).

- dependencies point one way: `analysis` is a library that imports nothing from `loadtest`;
- no import cycles, counting imports inside functions (they hide circles, they do not break them);
- the process boundary: only `loadtest/inlocust/` runs inside Locust; every other module (the
  parent process: commands, process layer, settings, mock, analysis) imports neither Locust nor
  gevent, nor any module of `loadtest.inlocust` (its package face, the locustfile's path, aside);
- a function-level import says why it is deferred, in a comment on its line or the line above.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("loadtest", "analysis")
LOCUST_SIDE = "loadtest.inlocust"
FORBIDDEN_IN_PARENT = ("locust", "gevent", "geventhttpclient")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


@cache  # each file parsed once per session (the tree does not change under a test run)
def imports(name: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, the statement, inside a function?) for every import of a module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    base = name if is_package(name) else name.rpartition(".")[0]
    out: list[tuple[str, ast.stmt, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:  # relative
                    anchor = base.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    mod = ".".join(anchor + ([mod] if mod else []))
                for a in child.names:
                    sub = f"{mod}.{a.name}"
                    out.append((sub if sub in MODULES else mod, child, in_function))
            visit(child, nested)

    visit(tree, False)
    return out


def internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        targets = set()
        for mod, _, _ in imports(name):
            # the module itself, or the package it names (an `import a.b` runs a/__init__ too,
            # but package faces here import nothing of their own packages)
            while mod and mod not in MODULES:
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                targets.add(mod)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_the_reader_finds_every_module_and_its_imports():
    """The walker itself can fail: it sees the modules and edges known to exist."""
    assert {"loadtest.cli", "loadtest.commands.run", "loadtest.inlocust.plugin", "analysis.report"} <= set(MODULES)
    graph = internal_graph()
    assert "loadtest.config" in graph["loadtest.commands.run"]
    assert "analysis.records" in graph["loadtest.inlocust.recorder"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_analysis_imports_nothing_from_loadtest():
    offenders = [
        f"{name} imports {mod}" for name in MODULES if name.split(".")[0] == "analysis" for mod, _, _ in imports(name) if mod.split(".")[0] == "loadtest"
    ]
    assert not offenders, "analysis is a library below loadtest:\n" + "\n".join(offenders)


def parent_side(name: str) -> bool:
    return not (name == LOCUST_SIDE or name.startswith(LOCUST_SIDE + "."))


@pytest.mark.parametrize("name", [n for n in MODULES if parent_side(n)])
def test_the_parent_side_imports_neither_locust_nor_gevent(name):
    """Directly or through any module it imports (all imports count, deferred ones too)."""
    graph = internal_graph()
    seen, todo = set(), [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for target, stmt, _ in imports(mod):
            top = target.split(".")[0]
            assert top not in FORBIDDEN_IN_PARENT, f"{name} reaches {target} (through {mod}, line {stmt.lineno}); only loadtest.inlocust may"
            assert parent_side(target) or target == LOCUST_SIDE, (
                f"{name} reaches {target} (through {mod}, line {stmt.lineno}): the Locust side is for Locust's processes"
            )
        todo.extend(graph[mod])


def test_a_deferred_import_says_why():
    missing = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for _, stmt, in_function in imports(name):
            if not in_function:
                continue
            here, above = lines[stmt.lineno - 1], lines[stmt.lineno - 2].strip()
            if "#" not in here and not above.startswith("#"):
                missing.append(f"{path.relative_to(ROOT)}:{stmt.lineno}: {here.strip()}")
    missing = sorted(set(missing))
    assert not missing, "function-level imports without a reason (`# pandas: only when …`):\n" + "\n".join(missing)
