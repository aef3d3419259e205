"""Imports run one way: grapheneseg (core) <- simulate <- train <- evaluate, and no module imports a CLI.

Read from the source with `ast`, function-level imports included: a lazy import may defer a heavy
third-party library, never hide an upward arrow or a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("grapheneseg", "simulate", "train", "evaluate")  # each may import only those before it
TRAIN_FROM_SIMULATE = {"simulate.dataset"}  # train reads the HDF5 datasets and nothing else of simulate


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
                elif name.split(".")[1:2] == ["cli"] and path.name != "cli.py":
                    problems.append(f"{where} imports the command line module {name}")
    return problems


def package_graph(root: Path) -> dict[str, set[str]]:
    """Which first-party package imports which."""
    return {package: {n.split(".")[0] for path in (root / package).rglob("*.py")
                      for n in imported_modules(root, path)} - {package} for package in LAYERS}


def has_cycle(graph: dict[str, set[str]]) -> bool:
    """Depth-first search for a back edge."""
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in graph)


def test_the_tree_imports_one_way_and_has_no_cycle():
    assert violations(ROOT) == []
    graph = package_graph(ROOT)
    assert not has_cycle(graph), graph
    assert graph["grapheneseg"] == set()


@pytest.mark.parametrize("package, line", [
    ("grapheneseg", "from train.model import build_model"),       # core reaching up
    ("simulate", "def f():\n    from evaluate import bragg\n"),  # lazy upward import
    ("train", "from simulate.structures import build_structure"),  # past the HDF5 reader
    ("evaluate", "from .cli import main"),                        # library code importing a CLI
])
def test_a_planted_upward_import_is_caught(tmp_path, package, line):
    for name in LAYERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "planted.py").write_text(line + "\n")
    problems = violations(tmp_path)
    assert problems and all(p.startswith(f"{package}/planted.py") for p in problems), problems


def test_a_package_cycle_is_detected():
    assert has_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert not has_cycle({"a": {"b"}, "b": {"c"}, "c": set()})
