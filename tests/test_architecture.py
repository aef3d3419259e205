"""Imports run one way: grapheneseg (core) <- simulate <- train <- evaluate, and no module imports a CLI.
Inside evaluate, benchmarking (evaluate.benchmark) may use the applications (evaluate.apply), never
the reverse. No two modules import each other, directly or round a loop, inside a package or across.

Read from the source with `ast`, function-level imports included: a lazy import may defer a heavy
third-party library, never hide an upward arrow or a cycle. `python tests/test_architecture.py`
prints the module graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("grapheneseg", "simulate", "train", "evaluate")  # each may import only those before it
TRAIN_FROM_SIMULATE = {"simulate.dataset"}  # train reads the HDF5 datasets and nothing else of simulate
INNER = {"evaluate.apply": ("evaluate.benchmark",),  # inside a package: who may not import whom
         "evaluate.napari": ("evaluate.benchmark",)}


def imported_modules(root: Path, path: Path) -> set[str]:
    """Every first-party module name `path` (under `root`) imports, absolute or relative, at any depth."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
                found.update([name] if node.module else [f"{name}.{a.name}" for a in node.names])
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in found if n.split(".")[0] in LAYERS}


def violations(root: Path) -> list[str]:
    """Upward imports, train reaching past simulate.dataset, and imports of any `*.cli` module."""
    problems = []
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            allowed = set(LAYERS[: LAYERS.index(package) + 1])
            for name in sorted(imported_modules(root, path)):
                top = name.split(".")[0]
                where = path.relative_to(root)
                if top not in allowed:
                    problems.append(f"{where} imports {name}: {package} may import only {sorted(allowed)}")
                elif package == "train" and top == "simulate" and not any(
                        name == m or name.startswith(m + ".") for m in TRAIN_FROM_SIMULATE):
                    problems.append(f"{where} imports {name}: train may use only {sorted(TRAIN_FROM_SIMULATE)}")
                elif name.split(".")[-1] == "cli" and path.name != "cli.py":
                    problems.append(f"{where} imports the command line module {name}")
                else:
                    module = ".".join(path.relative_to(root).with_suffix("").parts)
                    problems += [f"{where} imports {name}: {inside} may not import {banned}"
                                 for inside, banned_list in INNER.items() if module.startswith(inside + ".")
                                 for banned in banned_list if name == banned or name.startswith(banned + ".")]
    return problems


def module_name(root: Path, path: Path) -> str:
    """The dotted module name of a source file (a package's __init__.py is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(root: Path) -> dict[str, set[str]]:
    """Which first-party module imports which: every imported name resolved to the longest
    prefix that is a module of the tree (`from .x import f` -> the module x)."""
    paths = {module_name(root, p): p for package in LAYERS for p in sorted((root / package).rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        targets = set()
        for name in imported_modules(root, path):
            parts = name.split(".")
            hit = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in paths), None)
            if hit and hit != module:
                targets.add(hit)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as [a, b, ..., a] (depth-first search for a back edge), [] when none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_tree_imports_one_way_and_has_no_cycle():
    assert violations(ROOT) == []
    graph = module_graph(ROOT)
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))
    assert not any(t.split(".")[0] != "grapheneseg" for m, ts in graph.items() if m.startswith("grapheneseg")
                   for t in ts)


@pytest.mark.parametrize("package, line", [
    ("grapheneseg", "from train.models.unet import build_model"),       # core reaching up
    ("simulate", "def f():\n    from evaluate import bragg\n"),  # lazy upward import
    ("train", "from simulate.structures import build_structure"),  # past the HDF5 reader
    ("evaluate", "from .cli import main"),                        # library code importing a CLI
    ("evaluate/apply", "def f():\n    from ..benchmark.report import Arm\n"),  # applying reaching into benchmarking
])
def test_a_planted_upward_import_is_caught(tmp_path, package, line):
    for name in (*LAYERS, "evaluate/apply", "evaluate/benchmark"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "planted.py").write_text(line + "\n")
    problems = violations(tmp_path)
    assert problems and all(p.startswith(f"{package}/planted.py") for p in problems), problems


def test_a_planted_circle_inside_a_package_is_caught(tmp_path):
    """Two modules of evaluate/ that import each other, one of them lazily inside a function (as
    evaluate.apply and evaluate.uncertainty once did): the graph has the circle, and without the
    back edge it has none."""
    for name in (*LAYERS, "evaluate/apply"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "evaluate/apply/segment.py").write_text("def segment():\n    from .uncertainty import std\n")
    (tmp_path / "evaluate/apply/uncertainty.py").write_text("from evaluate.apply.segment import segment\n")
    assert violations(tmp_path) == []  # no layer is crossed: only the cycle test sees it
    assert find_cycle(module_graph(tmp_path)) == ["evaluate.apply.segment", "evaluate.apply.uncertainty",
                                                  "evaluate.apply.segment"]
    (tmp_path / "evaluate/apply/segment.py").write_text("def segment():\n    pass\n")
    assert find_cycle(module_graph(tmp_path)) == []


def test_cycle_search():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


if __name__ == "__main__":
    for module, targets in sorted(module_graph(ROOT).items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '-'}")
