import argparse
from pathlib import Path

import pytest
import torch
import torchvision

from detr import (
    build_model,
    infer_config_from_state_dict,
    load_checkpoint_file,
    load_checkpoint_state_dict,
    load_model_weights,
)
from detr.errors import CheckpointError

SPEC = Path(__file__).parents[2].parent / "shared/spec/detr_r50_state_dict.tsv"
PAYLOAD_RAN = []


def run_payload():
    PAYLOAD_RAN.append(True)


class Payload:
    """Unpickling this would call run_payload: what weights_only=True must refuse."""

    def __reduce__(self):
        return run_payload, ()


def tiny_outputs(model):
    model.eval()
    with torch.no_grad():
        return model([torch.linspace(-1, 1, 3 * 40 * 56).reshape(3, 40, 56)])


def test_round_trip_of_an_official_style_training_checkpoint(tiny_config, tmp_path):
    model, _, _ = build_model(tiny_config)
    path = tmp_path / "checkpoint.pth"
    torch.save(
        {"model": model.state_dict(), "args": argparse.Namespace(lr=1e-4, backbone="resnet18"), "epoch": 3}, path
    )
    fresh, _, _ = build_model(tiny_config)
    load_model_weights(fresh, path, tiny_config)
    assert load_checkpoint_file(path)["args"].backbone == "resnet18"
    expected, actual = tiny_outputs(model), tiny_outputs(fresh)
    assert torch.equal(expected["pred_logits"], actual["pred_logits"])
    assert torch.equal(expected["pred_boxes"], actual["pred_boxes"])


def test_bare_state_dict_saved_from_ddp(tiny_config, tmp_path):
    model, _, _ = build_model(tiny_config)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pth")
    state_dict = load_checkpoint_state_dict(tmp_path / "ddp.pth")
    assert list(state_dict) == list(model.state_dict())


def test_wrong_shapes_name_the_keys_and_the_config_that_fits(tiny_config, tmp_path):
    tiny_config.num_classes = 250
    panoptic, _, _ = build_model(tiny_config)
    torch.save({"model": panoptic.state_dict()}, tmp_path / "panoptic.pth")
    tiny_config.num_classes = 91
    model, _, _ = build_model(tiny_config)
    with pytest.raises(CheckpointError) as error:
        load_model_weights(model, tmp_path / "panoptic.pth", tiny_config)
    message = str(error.value)
    assert "\n" not in message
    assert "does not fit the model: 2 mis-shaped keys" in message
    assert "class_embed.weight [251,64] vs [92,64]" in message and "class_embed.bias [251] vs [92]" in message
    assert "num_classes=250 (a panoptic checkpoint)" in message and "num_queries=10" in message
    assert "backbone=resnet18" in message and "set num_classes=250" in message


def test_wrong_keys_are_listed_with_counts(tiny_config, tmp_path):
    model, _, _ = build_model(tiny_config)
    state_dict = model.state_dict()
    for key in ("query_embed.weight", "input_proj.bias"):
        del state_dict[key]
    state_dict["class_head.weight"] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError) as error:
        load_model_weights(model, tmp_path / "renamed.pth", tiny_config)
    message = str(error.value)
    assert "2 missing keys (query_embed.weight, input_proj.bias)" in message
    assert "1 unexpected keys (class_head.weight)" in message


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}, "hook": Payload()}, tmp_path / "malicious.pth")
    refused = r"contains pickled code/objects and torch.load\(weights_only=True\) refused"
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint_state_dict(tmp_path / "malicious.pth")
    assert not PAYLOAD_RAN


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_state_dict(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint_state_dict(tmp_path / "text.pth")
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "optimizer.pth")
    with pytest.raises(CheckpointError, match="neither a state_dict"):
        load_checkpoint_state_dict(tmp_path / "optimizer.pth")


def test_download_failure_is_one_line(monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="could not download https://example.org/detr-r50.pth .*name resolution"):
        load_checkpoint_state_dict("https://example.org/detr-r50.pth")


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_infer_backbone_from_block_structure(backbone):
    with torch.device("meta"):
        resnet = getattr(torchvision.models, backbone)()
    state_dict = {f"backbone.0.body.{k}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    assert infer_config_from_state_dict(state_dict) == {"backbone": backbone}


@pytest.mark.skipif(not SPEC.exists(), reason=f"the official key layout {SPEC} is not there (it is in CI's checkout)")
def test_infer_the_official_r50_config():
    rows = [line.split("\t") for line in SPEC.read_text().splitlines()[1:] if line.strip()]
    state_dict = {k: torch.empty([int(d) for d in shape.split("x")], device="meta") for k, shape, _ in rows}
    assert infer_config_from_state_dict(state_dict) == {
        "num_classes": 91,
        "num_queries": 100,
        "hidden_dim": 256,
        "enc_layers": 6,
        "dec_layers": 6,
        "dim_feedforward": 2048,
        "backbone": "resnet50",
    }
    panoptic = {f"detr.{k}": v for k, v in state_dict.items()}
    assert infer_config_from_state_dict(panoptic)["backbone"] == "resnet50"
