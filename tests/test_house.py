"""The shape of the package, kept by tests so it cannot drift back: one folder per layer of docs/architecture.md's
table and imports only down it (found with `ast`, function-level imports included), no cycle, a small root,
modules and functions readable in one sitting, and only `hftl/backends/` asks which training engine runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hftl"
ARCHITECTURE = REPO / "docs" / "architecture.md"
MAX_ROOT_MODULES = 6
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
ENGINE_WORDS = ("DistributedType", "distributed_type", "is_deepspeed", "is_sharded", "deepspeed", "fsdp")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path], me: str | None = None) -> set[str]:
    """The hftl modules `path` imports anywhere (module level, functions, TYPE_CHECKING blocks).

    `from hftl.x import y` names the submodule `hftl.x.y` when there is one, else `hftl.x`; the parent
    packages Python imports on the way are not counted (every submodule would loop with its package).
    """
    me = me or (module_name(path) if PACKAGE in path.resolve().parents else None)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "hftl"}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and me:  # `from .x import y`: resolved against the importing module's package
                package = me if path.name == "__init__.py" else me.rpartition(".")[0]
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            if module.split(".")[0] != "hftl":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in known else module)
    return {name for name in found if name in known and name != me}


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


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def architecture_layers(text: str) -> list[tuple[str, list[str]]]:
    """(layer, the module-name prefixes of its folders and files) per row of the architecture page's layer table,
    bottom layer first. A folder `hftl/data/` is the prefix `hftl.data`; a file `hftl/__init__.py` is `hftl`."""
    section = text.split("## The layers of the house", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "`hftl/" in line]
    layers = []
    for cells in rows:
        paths = [c.strip("` ") for c in cells[1].split(",")]
        layers.append(
            (
                cells[0].strip(),
                [
                    module_name(PACKAGE.parent / p.rstrip("/")) if p.endswith(".py") else p.rstrip("/").replace("/", ".")
                    for p in paths
                ],
            )
        )
    return layers


def layer_of(name: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The index of the layer whose longest prefix holds module `name`, or None."""
    best = None
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return best[0] if best else None


def climbing_imports(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]]) -> list[str]:
    """`a (layer) imports b (higher layer)` for every import that climbs the table."""
    found = []
    for name, imported in sorted(graph.items()):
        mine = layer_of(name, layers)
        for other in sorted(imported):
            theirs = layer_of(other, layers)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{name} ({layers[mine][0]}) imports {other} ({layers[theirs][0]})")
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_hftl():
    graph = import_graph()
    assert sum(map(len, graph.values())) > 50, "the import graph came out empty: the finder is broken"
    found = cycles(graph)
    detail = [" -> ".join(c) + " : " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_the_layer_table_is_read_and_covers_the_package():
    layers = architecture_layers(ARCHITECTURE.read_text())
    names = [name for name, _ in layers]
    assert names[0] == "ground" and names[-1] == "entry" and len(names) >= 8, names
    homeless = [name for name in modules() if layer_of(name, layers) is None]
    assert not homeless, f"modules in no row of {ARCHITECTURE.name}'s layer table (add them there): {homeless}"
    folders = {p.parent for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE}
    top = sorted({f.relative_to(PACKAGE).parts[0] for f in folders})
    listed = {prefix.split(".")[1] for _, prefixes in layers for prefix in prefixes if "." in prefix}
    assert set(top) <= listed, f"folders of hftl/ not in the layer table: {sorted(set(top) - listed)}"


def test_imports_point_down_the_layers():
    layers = architecture_layers(ARCHITECTURE.read_text())
    found = climbing_imports(import_graph(), layers)
    assert not found, "imports that climb docs/architecture.md's layer table:\n" + "\n".join(found)


def test_the_layer_check_finds_a_planted_violation():
    """The check must see a climbing import: plant one in the real graph (the errors module importing the trainer),
    and one through a function-level import in a module file the walker reads."""
    layers = architecture_layers(ARCHITECTURE.read_text())
    graph = import_graph()
    graph["hftl.utils.errors"] = graph["hftl.utils.errors"] | {"hftl.training.trainer"}
    assert climbing_imports(graph, layers) == ["hftl.utils.errors (ground) imports hftl.training.trainer (training)"]
    assert layer_of("hftl.data.modalities.text", layers) == layer_of("hftl.data.sources", layers)
    assert layer_of("hftl", layers) == layer_of("hftl.cli.train", layers) == len(layers) - 1


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from hftl.studies.compare import compare\n    import hftl.runs.export\n")
    known = modules()
    assert imports_of(planted, known) == {"hftl.studies.compare", "hftl.runs.export"}
    planted.write_text("from ..training import trainer\nfrom . import files\n")  # read as hftl/utils/planted.py
    assert imports_of(planted, known, me="hftl.utils.planted") == {"hftl.training.trainer", "hftl.utils.files"}


def test_the_root_is_small():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"hftl/ holds {len(root)} modules at its root: {root}; give them a folder"


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


def test_study_modules_do_not_shadow_the_public_functions():
    """`hftl.probe` and `hftl.search` stay functions after their modules (`hftl.studies.probe`, ...) are imported:
    the studies package re-exports nothing, so importing a module sets no attribute of `hftl`."""
    import importlib

    import hftl

    for name in ("compare", "probe", "search"):
        importlib.import_module(f"hftl.studies.{name}")
        function = getattr(hftl, name)
        assert callable(function) and function.__module__ == f"hftl.studies.{name}", (name, function)
    assert hftl.finetune.__module__ == "hftl.runs.finetune" and callable(hftl.predict)
