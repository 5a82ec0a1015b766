import pytest

from detr import DETRConfig


@pytest.fixture
def tiny_config() -> DETRConfig:
    """A DETR small enough for CPU tests: resnet18, hidden 64, 4 heads, 2+2 layers, 10 queries, no dropout."""
    return DETRConfig(backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=2,
                      dim_feedforward=128, num_queries=10, dropout=0.0, num_classes=7)
