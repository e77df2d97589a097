"""The shape of the package, kept by tests so it cannot drift back: imports point one way (no cycle, found
with `ast`, function-level imports included), modules and functions stay readable in one sitting, and
only `hftl/backends/` asks which training engine runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hftl"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
ENGINE_WORDS = ("DistributedType", "distributed_type", "is_deepspeed", "is_sharded", "deepspeed", "fsdp")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The hftl modules `path` imports anywhere (module level, functions, TYPE_CHECKING blocks).

    `from hftl.x import y` names the submodule `hftl.x.y` when there is one, else `hftl.x`; the parent
    packages Python imports on the way are not counted (every submodule would loop with its package).
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "hftl"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "hftl":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {name for name in found if name in known and name != module_name(path)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_hftl():
    known = modules()
    graph = {name: imports_of(path, known) for name, path in known.items()}
    assert sum(map(len, graph.values())) > 50, "the import graph came out empty: the finder is broken"
    found = cycles(graph)
    detail = [" -> ".join(c) + " : " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_fit_a_sitting(name):
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path} has {lines} lines; split it by job (at most {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{path}:{node.lineno} {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})"
            )


def test_only_the_backends_ask_which_engine_runs():
    offenders = []
    for name, path in modules().items():
        if name.startswith("hftl.backends"):
            continue
        code = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Name, ast.Attribute))]
        words = {n.id if isinstance(n, ast.Name) else n.attr for n in code}
        offenders += [f"{path}: {w}" for w in sorted(words) if any(e.lower() in w.lower() for e in ENGINE_WORDS)]
    assert not offenders, "engine tests outside hftl/backends/:\n" + "\n".join(offenders)


def test_python_dash_m_hftl_is_the_hftl_command():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "hftl", "--help"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0 and "usage: hftl" in proc.stdout and "compare" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "hftl", "train", "missing.yaml"], capture_output=True, text=True, cwd=PACKAGE.parent
    )
    assert bad.returncode == 2 and "config file missing.yaml does not exist" in bad.stderr
