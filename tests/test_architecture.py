"""The layers show in the imports: no package imports a layer above it, no plugin imports another, no cycle.

Layers, bottom to top (README, "Architecture"):

- core ``bench``; the region mechanism ``regions``;
- plugins ``composer``, ``baselines``, ``metrics``, ``randomworld``, ``toyworld``, ``calibration``
  (they reach each other only through the core's hooks);
- ``reports``; the app ``lcbench`` (CLI, dashboard, studies, regression check);
- developer tools ``toytrain`` and ``scripts`` (the product never imports them).

Every import statement counts, also those inside functions (a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS: dict[str, int] = {
    "bench": 0,
    "regions": 1,
    "composer": 2,
    "baselines": 2,
    "metrics": 2,
    "randomworld": 2,
    "toyworld": 2,
    "calibration": 2,
    "reports": 3,
    "lcbench": 4,
    "toytrain": 5,
}
PLUGINS = {name for name, layer in LAYERS.items() if layer == 2}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imports(path: Path, module: str) -> set[str]:
    """Project modules imported anywhere in the file (absolute and relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in LAYERS}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name in _imports(path, module):
            while name and name not in modules:  # `from a.b import f` names a.b.f: keep the module part
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    return graph


def test_no_upward_or_sideways_import() -> None:
    wrong = []
    for module, targets in _graph().items():
        source = module.split(".")[0]
        for target in targets:
            package = target.split(".")[0]
            if LAYERS[package] > LAYERS[source]:
                wrong.append(f"{module} -> {target} (upward)")
            elif source != package and source in PLUGINS and package in PLUGINS:
                wrong.append(f"{module} -> {target} (one plugin into another)")
    assert not wrong, "\n".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_cycle(level: str) -> None:
    graph = _graph()
    if level == "package":
        packages: dict[str, set[str]] = defaultdict(set)
        for module, targets in graph.items():
            for target in targets:
                if module.split(".")[0] != target.split(".")[0]:
                    packages[module.split(".")[0]].add(target.split(".")[0])
        graph = packages
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from metrics.scoring import score_run\n    import reports.tables\n")
    assert _imports(source, "bench.m") >= {"metrics.scoring", "reports.tables"}
