"""The flag → RunConfig key map is derived from the options dataclasses, and no module imports the commands."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from detrdoctor.commands.evaluate import EvaluateOptions
from detrdoctor.commands.train import TrainOptions
from detrdoctor.options import SECTION_OF, config_overrides
from detrdoctor.runconfig import load_run_config

PACKAGE = Path(__file__).parents[2] / "detrdoctor"


def test_given_flags_become_their_sections_keys() -> None:
    options = TrainOptions(epochs=3, on_anomaly="stop", dashboard=True, tensorboard=True, num_workers=0, batch_size="4")
    assert config_overrides(options) == {
        "train": {"epochs": 3, "batch_size": 4},
        "watchdog": {"on_anomaly": "stop"},
        "diagnostics": {"dashboard": False, "tensorboard": True},  # --no-dashboard turns the dashboard off
        "data": {"num_workers": 0},
    }
    assert config_overrides(TrainOptions()) == {}  # nothing given: the profile decides


def test_flags_that_are_not_config_keys_stay_out() -> None:
    options = EvaluateOptions(weights="model.pth", threshold=0.3, coco_path="data", val_images="val")
    assert config_overrides(options) == {"data": {"coco_path": "data", "val_images": "val"}}


def test_flags_apply_to_the_profile(tmp_path: Path) -> None:
    cfg = load_run_config("tiny", None, config_overrides(TrainOptions(epochs=2, stall_after=0.0, seed=7)))
    assert (cfg.train.epochs, cfg.diagnostics.stall_after, cfg.train.seed) == (2, 0.0, 7)


def test_config_keys_name_one_section() -> None:
    assert SECTION_OF["coco_path"] == "data" and SECTION_OF["on_stall"] == "diagnostics"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_the_commands_imports_them(path: Path) -> None:
    """cli.py and commands/ are the top layer: a module below importing them is an upward import."""
    if path.name == "cli.py" and path.parent == PACKAGE or "commands" in path.relative_to(PACKAGE).parts:
        return
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    upward = sorted(
        m for m in imported if m == "detrdoctor.commands" or m.startswith(("detrdoctor.commands.", "detrdoctor.cli"))
    )
    assert not upward, f"{path} imports {upward}"
