"""The import graph runs one way: detr (the library) ← shared helpers ← diagnostics ← commands ← cli.

Every import counts, lazy ones inside functions too: a lazy upward import is still a dependency the wrong way.
Packages of one layer may import each other, but not in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower number: lower layer. A module belongs to the layer of its longest matching prefix.
LAYERS = {
    "detr": 0,
    "detrdoctor": 2,  # the diagnostics: every package and module not named below
    "detrdoctor.fmt": 1,
    "detrdoctor.verdict": 1,
    "detrdoctor.extras": 1,
    "detrdoctor.pyspy": 1,
    "detrdoctor.profiles": 1,
    "detrdoctor.runconfig": 1,
    "detrdoctor.progress_bar": 1,
    "detrdoctor.options": 1,  # the shared flag declarations: diagnostics packages declare their own with them
    "detrdoctor.commands": 3,
    "detrdoctor.cli": 4,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)]


def imports() -> dict[str, set[str]]:
    """Each module of detr/ and detrdoctor/ → the project modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {}
    for package in ("detr", "detrdoctor"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
            graph[name] = {m for m in found if m.split(".")[0] in ("detr", "detrdoctor")}
    return graph


def test_no_module_imports_from_a_layer_above():
    graph = imports()
    upward = sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph.items()
        for target in targets
        if target in graph and layer(target) > layer(module)
    )
    assert not upward, "\n".join(upward)


def package_of(module: str) -> str:
    """A diagnostics module's package: detrdoctor.X for detrdoctor.X.y, the module itself for a loose one."""
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("level", [2])
def test_the_diagnostics_packages_import_each_other_without_a_cycle(level):
    graph = imports()
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if layer(module) != level or not module.startswith("detrdoctor."):
            continue
        for target in targets:
            if target in graph and layer(target) == level and package_of(target) != package_of(module):
                edges.setdefault(package_of(module), set()).add(package_of(target))

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = {" → ".join(c) for p in sorted(edges) if (c := cycle_from(p))}
    assert not cycles, "\n".join(sorted(cycles))
