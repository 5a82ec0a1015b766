"""Fused attention (F.scaled_dot_product_attention) against nn.MultiheadAttention's explicit reference path."""

from __future__ import annotations

import pytest
import torch

from detr import build_model
from detr.attention import MultiheadAttention
from detr.config import DETRConfig, config_from_dict, config_to_toml, load_config_file, validate
from detr.errors import ConfigError
from detrdoctor.watchdog.readout import attention_logits


def attention_pair(dropout: float = 0.0) -> tuple[MultiheadAttention, MultiheadAttention]:
    torch.manual_seed(0)
    fused = MultiheadAttention(16, 4, dropout)
    reference = MultiheadAttention(16, 4, dropout, fused=False)
    reference.load_state_dict(fused.state_dict(), strict=True)
    return fused, reference


def padded_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """query [5, 3, 16], key [9, 3, 16], key_padding_mask [3, 9] with 0, 3 and 8 padded keys."""
    generator = torch.Generator().manual_seed(1)
    query, key = torch.randn(5, 3, 16, generator=generator), torch.randn(9, 3, 16, generator=generator)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 6:] = mask[2, 1:] = True
    return query, key, mask


def test_fused_matches_the_reference_with_a_key_padding_mask():
    fused, reference = attention_pair()
    query, key, mask = padded_inputs()
    value = key.flip(0)
    torch.testing.assert_close(
        fused(query, key, value, key_padding_mask=mask)[0],
        reference(query, key, value, key_padding_mask=mask)[0],
        rtol=0,
        atol=1e-5,
    )
    torch.testing.assert_close(fused(query, query, query)[0], reference(query, query, query)[0], rtol=0, atol=1e-5)


def test_fused_gradients_match_the_reference_without_dropout():
    grads = []
    for module in attention_pair():
        query, key, mask = padded_inputs()
        query.requires_grad_()
        module(query, key, key, key_padding_mask=mask)[0].square().sum().backward()
        grads.append([query.grad, module.in_proj_weight.grad, module.out_proj.weight.grad])
    for fused, reference in zip(*grads):
        torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)


def test_attention_dropout_acts_in_training_only():
    fused, _ = attention_pair(dropout=0.5)
    query, key, mask = padded_inputs()
    first, second = fused(query, key, key, key_padding_mask=mask)[0], fused(query, key, key, key_padding_mask=mask)[0]
    assert not torch.allclose(first, second)
    fused.eval()
    torch.testing.assert_close(
        fused(query, key, key, key_padding_mask=mask)[0],
        fused(query, key, key, key_padding_mask=mask)[0],
        rtol=0,
        atol=0,
    )


def test_the_reference_path_returns_the_maps_the_watchdog_recomputes():
    fused, reference = attention_pair()
    query, key, mask = padded_inputs()
    assert fused(query, key, key, key_padding_mask=mask)[1] is None
    # Head-averaged [B, L, S], as the official visualisation reads them.
    _, weights = reference(query, key, key, key_padding_mask=mask)
    logits = attention_logits(reference, query, key).view(3, 4, 5, 9)
    expected = logits.masked_fill(mask[:, None, None, :], float("-inf")).softmax(-1).mean(1)
    torch.testing.assert_close(expected, weights)


def test_tiny_model_fused_and_reference_agree_and_share_the_state_dict(tiny_config):
    torch.manual_seed(0)
    fused, _, _ = build_model(tiny_config)
    tiny_config.attention = "reference"
    reference, _, _ = build_model(tiny_config)
    assert list(fused.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(fused.state_dict(), strict=True)
    layer = reference.transformer.decoder.layers[0]
    assert not layer.multihead_attn.fused and fused.transformer.decoder.layers[0].multihead_attn.fused
    images = [torch.randn(3, 64, 96), torch.randn(3, 80, 48)]  # padded both ways: a real key padding mask
    with torch.no_grad():
        out_fused, out_reference = fused.eval()(images), reference.eval()(images)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(out_fused[key], out_reference[key], rtol=0, atol=1e-5)


def test_attention_dropout_unset_follows_dropout_as_in_the_official_code(tmp_path):
    cfg = config_from_dict({"model": {"dropout": 0.0}})
    assert cfg.model.attention_dropout_rate == 0.0 and cfg.model.attention == "fused"
    assert DETRConfig(dropout=0.0).attention_dropout_rate == 0.0  # official arguments ported as they are
    assert config_from_dict({"model": {"dropout": 0.0, "attention_dropout": 0.2}}).model.attention_dropout_rate == 0.2
    assert config_from_dict({}).model.attention_dropout_rate == 0.1  # the paper
    (tmp_path / "config.toml").write_text(config_to_toml(cfg))
    assert load_config_file(tmp_path / "config.toml") == cfg  # unset is written as absent and reads back unset
    assert load_config_file(tmp_path / "config.toml").model.attention_dropout is None
    model, _, _ = build_model(
        DETRConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1, dropout=0.0)
    )
    assert all(m.dropout == 0.0 for m in model.modules() if isinstance(m, MultiheadAttention))
    cfg.model.attention = "flash"
    with pytest.raises(ConfigError, match="attention must be fused or reference, got 'flash'"):
        validate(cfg)
    cfg.model.attention, cfg.model.attention_dropout = "reference", 1.0
    with pytest.raises(ConfigError, match="attention_dropout must be in"):
        validate(cfg)


def test_memprofile_estimates_the_kernel_the_model_runs(tiny_cfg):
    from detrdoctor.memprofile.estimate import Estimator

    tiny_cfg.model.backbone_stage = 3  # 1,600 encoder tokens at 640×640: the attention weights dominate
    results = {}
    for kind in ("fused", "reference"):
        tiny_cfg.model.attention = kind
        results[kind] = Estimator(tiny_cfg).estimate(1, "off", (640, 640))
    encoder = {kind: r.breakdown["activations"].get("encoder", 0) for kind, r in results.items()}
    assert results["fused"].peak_bytes < results["reference"].peak_bytes
    assert 3 * encoder["fused"] < encoder["reference"]


def test_tiny_training_losses_follow_the_reference_path(tiny_cfg, tmp_path):
    from detr.engine.metrics import read_metrics
    from detr.engine.trainer import Trainer

    tiny_cfg.train.max_steps = 4
    losses = {}
    for kind in ("fused", "reference"):
        tiny_cfg.model.attention = kind
        Trainer(tiny_cfg, output_dir=tmp_path / kind).fit()
        metrics = read_metrics(tmp_path / kind / "metrics.jsonl")
        losses[kind] = [r["loss"] for r in metrics if r["type"] == "step"]
    assert len(losses["fused"]) == 4
    assert losses["fused"] == pytest.approx(losses["reference"], rel=1e-4)
