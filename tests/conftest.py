"""Shared fixtures: a private dataset cache for the whole session, a tiny model config and the tiny profile.

tests/unit/ holds the fast loop (no Trainer, no subprocess, no CLI runs: `pytest tests/unit`); everything in
tests/e2e/ is marked `slow` here, so `pytest -m "not slow"` is the same loop and plain `pytest` runs all.
"""

from __future__ import annotations

import os

import pytest

from detr import DETRConfig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Synthetic datasets are generated into a temporary cache, never the user's home."""
    os.environ.setdefault("DETRDOCTOR_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_config() -> DETRConfig:
    """A DETR small enough for CPU tests: resnet18, hidden 64, 4 heads, 2+2 layers, 10 queries, no dropout."""
    return DETRConfig(
        backbone="resnet18",
        hidden_dim=64,
        nheads=4,
        enc_layers=2,
        dec_layers=2,
        dim_feedforward=128,
        num_queries=10,
        dropout=0.0,
        attention_dropout=0.0,
        num_classes=7,
    )


@pytest.fixture
def tiny_cfg():
    """The `tiny` profile as a RunConfig."""
    from detrdoctor.profiles import load_profile

    return load_profile("tiny")


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: the divergent runs' step of overflow depends on how a fused kernel
    splits its sums across threads, and CI machines differ in cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
