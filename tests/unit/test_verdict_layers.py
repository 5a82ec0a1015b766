"""The shared cores sit below their users: every import, lazy ones included, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "detrdoctor"
USERS = ("detrdoctor.envcheck", "detrdoctor.triage", "detrdoctor.commands", "detrdoctor.cli")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("core", ["datadoctor", "verdict.py", "fmt.py", "predictions"])
def test_a_core_imports_none_of_the_commands_that_use_it(core: str) -> None:
    files = sorted((PACKAGE / core).rglob("*.py")) if (PACKAGE / core).is_dir() else [PACKAGE / core]
    upward = {f"{f.name}: {m}" for f in files for m in imported(f) if m.startswith(USERS)}
    assert not upward, upward
