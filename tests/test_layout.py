"""The house: imports point one way (DESIGN.md), no cycles, moderate modules, a thin CLI.

Every ``import`` and ``from ... import`` of ``src/elbox`` counts, deferred ones (inside
functions) included; only imports under ``if TYPE_CHECKING:`` are left out (they never run).
Each module has a layer; a module may import its own layer or lower ones, never a higher one.
Run ``python tests/test_layout.py`` for the graph's numbers.
"""

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "elbox"

# Lowest first. A module's layer is that of the longest prefix listed; "elbox" (the package face) is the top.
LAYERS: dict[str, int] = {
    "elbox._version": 0, "elbox.errors": 0, "elbox.schedules": 0, "elbox.catalogue": 0, "elbox.fields": 0,
    "elbox._lazy": 0,
    "elbox.distributions": 1,
    "elbox.bounds": 1, "elbox.importance": 1, "elbox.lbfgs": 1, "elbox.distributed": 1, "elbox.checkpoints": 1,
    "elbox.families": 2, "elbox.likelihoods": 2, "elbox.priors": 2, "elbox.networks": 2,
    "elbox.models": 3,
    "elbox.data": 4, "elbox.training.config": 4,
    "elbox.runs": 5, "elbox.aggregate": 5,
    "elbox.training": 6, "elbox.evaluation": 6, "elbox.bayes": 6, "elbox.impute": 6, "elbox.optim": 1,
    "elbox.plots": 7, "elbox.tensorboard": 7, "elbox.hooks": 7,
    "elbox.report": 8, "elbox.bayes.report": 8, "elbox.bayes.command": 8,
    "elbox.flags": 9, "elbox.cli": 9, "elbox.__main__": 9, "elbox": 9,
}  # fmt: skip
CATALOGUES = ("elbox.likelihoods", "elbox.priors", "elbox.families")  # may exceed the size limit
MAX_LINES, CLI_LINES = 500, 300


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        candidates = [a.name for a in node.names]
    else:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        module = ".".join([*base, *([node.module] if node.module else [])])
        candidates = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
    out = []
    for target in candidates:
        while target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target in known and target != name and not name.startswith(target + "."):  # a package's own face
            out.append(target)
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the elbox modules it imports (deferred imports included, TYPE_CHECKING ones not)."""
    known = modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno not in skip:
                graph[name].update(_targets(name, path, node, known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def sizes() -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in modules().items()}


def test_there_is_no_import_cycle():
    assert cycles(imports()) == []


def test_no_module_imports_a_layer_above_it():
    assert upward(imports()) == []


def test_every_module_has_a_layer():
    assert [m for m in modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)] == []


def test_modules_are_moderate_and_the_cli_is_thin():
    big = {m: n for m, n in sizes().items() if n > MAX_LINES and not m.startswith(CATALOGUES)}
    assert big == {}
    assert sizes()["elbox.cli"] < CLI_LINES


def test_the_check_sees_a_cycle_and_an_upward_import():
    graph = {"elbox.bounds": {"elbox.models"}, "elbox.models": {"elbox.bounds"}}
    assert cycles(graph) == [["elbox.bounds", "elbox.models"]]
    assert upward(graph) == ["elbox.bounds -> elbox.models"]


if __name__ == "__main__":
    g = imports()
    largest = sorted(sizes().items(), key=lambda kv: -kv[1])[:6]
    print(f"modules {len(g)}, imports {sum(map(len, g.values()))}, cycles {len(cycles(g))}, upward {len(upward(g))}")
    print("cycles:", cycles(g), "\nupward:", upward(g), "\nlargest:", largest)
