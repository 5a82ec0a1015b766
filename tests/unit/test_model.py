from pathlib import Path

import pytest
import torch
import torchvision

from detr import DETRConfig, PostProcess, build_model, pad_images
from detr.errors import CheckpointError, ConfigError
from detr.position_encoding import PositionEmbeddingSine

SPEC = Path(__file__).parents[2].parent / "shared/spec/detr_r50_state_dict.tsv"


def randomize_frozen_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the FrozenBatchNorm2d buffers non-trivial values, as a trained backbone has."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torchvision.ops.FrozenBatchNorm2d):
            n = module.weight.numel()
            module.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
            module.bias.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))


def test_the_default_config_is_the_papers_91_class_model_and_profiles_size_it_from_the_data():
    from detr.config import RunConfig, config_from_dict

    assert DETRConfig().num_classes == 91
    assert RunConfig().model.num_classes == "auto" and config_from_dict({}).model.num_classes == "auto"
    model, _, _ = build_model(DETRConfig(backbone="resnet18", hidden_dim=32, nheads=2, enc_layers=1, dec_layers=1))
    assert model.class_embed.out_features == 92  # 91 classes + "no object"


@pytest.mark.skipif(not SPEC.exists(), reason=f"the official key layout {SPEC} is not there (it is in CI's checkout)")
def test_default_model_has_the_official_r50_layout():
    expected = [line.split("\t") for line in SPEC.read_text().splitlines()[1:] if line.strip()]
    model, _, _ = build_model(DETRConfig())  # the paper's model, as the official `build` gives it
    actual = [
        (k, "x".join(str(d) for d in v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]
    assert len(actual) == 458
    assert actual == [tuple(row) for row in expected]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 41_302_368


def test_outputs_for_images_of_mixed_sizes(tiny_config):
    model, _, _ = build_model(tiny_config)
    out = model([torch.randn(3, 64, 96), torch.randn(3, 80, 48)])
    assert out["pred_logits"].shape == (2, 10, 8)
    assert out["pred_boxes"].shape == (2, 10, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == tiny_config.dec_layers - 1
    assert all(a["pred_logits"].shape == (2, 10, 8) and a["pred_boxes"].shape == (2, 10, 4) for a in out["aux_outputs"])


def test_no_aux_outputs_without_aux_loss(tiny_config):
    tiny_config.aux_loss = False
    model, criterion, _ = build_model(tiny_config)
    assert "aux_outputs" not in model([torch.randn(3, 64, 64)])
    assert set(criterion.weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_frozen_batchnorm_matches_torchvision_and_keeps_the_autocast_dtype():
    from detr.backbone import FrozenBatchNorm2d

    ours, theirs = FrozenBatchNorm2d(16), torchvision.ops.FrozenBatchNorm2d(16)
    randomize_frozen_batchnorm(ours)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 5, 7)
    assert torch.equal(ours(x), theirs(x))
    assert ours(x.bfloat16()).dtype == torch.bfloat16  # torchvision's promotes it to float32
    torch.testing.assert_close(ours(x.bfloat16()).float(), theirs(x), atol=0.05, rtol=0.02)


def test_a_backbone_trained_from_scratch_can_train_its_stem_with_real_batchnorm(tiny_config):
    frozen_stem, _, _ = build_model(tiny_config)
    tiny_config.train_backbone_stem, tiny_config.backbone_norm = True, "batch"
    scratch, _, _ = build_model(tiny_config)

    def trainable(model):
        return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}

    assert not any(".body.conv1." in n or ".body.layer1." in n for n in trainable(frozen_stem))
    assert "backbone.0.body.conv1.weight" in trainable(scratch) and "backbone.0.body.bn1.weight" in trainable(scratch)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.modules())
    # Same keys as the paper's layout, plus BatchNorm's step counters.
    extra = set(scratch.state_dict()) - set(frozen_stem.state_dict())
    assert extra and all(k.endswith("num_batches_tracked") for k in extra)


@pytest.mark.parametrize(
    ("stage", "channels", "stride", "unbuilt"), [(3, 256, 16, ["layer4"]), (2, 128, 8, ["layer3", "layer4"])]
)
def test_a_finer_backbone_stage_feeds_its_features_and_builds_no_later_layer(
    tiny_config, stage, channels, stride, unbuilt
):
    tiny_config.backbone_stage = stage
    model, _, _ = build_model(tiny_config)
    features, mask, pos = model.backbone(torch.randn(2, 3, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool))
    h, w = 64 // stride, 96 // stride
    assert features.shape == (2, channels, h, w) and mask.shape == (2, h, w) and pos.shape[-2:] == (h, w)
    assert not any(f".{layer}." in k for k in model.state_dict() for layer in unbuilt)
    assert model(torch.randn(1, 3, 64, 96))["pred_boxes"].shape == (1, tiny_config.num_queries, 4)


def test_pad_images_pads_bottom_right_and_masks_the_padding():
    a, b = torch.rand(3, 4, 6), torch.rand(3, 5, 3)
    batch, mask = pad_images([a, b])
    assert batch.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6) and mask.dtype == torch.bool
    assert torch.equal(batch[0, :, :4, :6], a) and (batch[0, :, 4:] == 0).all()
    assert torch.equal(batch[1, :, :5, :3], b) and (batch[1, :, :, 3:] == 0).all()
    assert not mask[0, :4].any() and mask[0, 4:].all()
    assert not mask[1, :, :3].any() and mask[1, :, 3:].all()


def test_list_input_equals_padded_batch_with_mask(tiny_config):
    model, _, _ = build_model(tiny_config)
    randomize_frozen_batchnorm(model)
    model.eval()
    images = [torch.randn(3, 64, 96), torch.randn(3, 50, 70)]
    batch, mask = pad_images(images)
    with torch.no_grad():
        from_list, from_batch = model(images), model(batch, mask)
        without_padding = model(batch[:1])
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(from_list[key], from_batch[key], rtol=0, atol=0)
        torch.testing.assert_close(without_padding[key], from_batch[key][:1], rtol=1e-4, atol=1e-5)


def test_frozen_layers_stay_frozen(tiny_config):
    model, criterion, _ = build_model(tiny_config)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        n
        for n, _ in model.named_parameters()
        if n.startswith("backbone.") and not any(f".layer{i}." in n for i in (2, 3, 4))
    }
    assert "backbone.0.body.conv1.weight" in frozen and "backbone.0.body.layer1.0.conv1.weight" in frozen
    assert not any("num_batches_tracked" in k for k in model.state_dict())
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = {n: p.clone() for n, p in model.named_parameters()}

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}]
    losses = criterion(model([torch.randn(3, 48, 48)]), targets)
    sum(losses[k] * w for k, w in criterion.weight_dict.items()).backward()
    optimizer.step()

    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, params[n])}
    assert not changed & frozen
    assert {
        "backbone.0.body.layer2.0.conv1.weight",
        "backbone.0.body.layer4.1.conv2.weight",
        "class_embed.weight",
        "input_proj.weight",
    } <= changed


def test_whole_backbone_frozen_when_not_trained(tiny_config):
    model, _, _ = build_model(tiny_config, train_backbone=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone."))
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))


def test_position_encoding_is_float32_under_autocast(tiny_config):
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pos = PositionEmbeddingSine(32)(mask)
    assert pos.dtype == torch.float32 and pos.shape == (2, 64, 5, 7)
    # normalised to the unpadded extent: the last valid row of each image has the same encoding
    torch.testing.assert_close(pos[0, :32, 4], pos[1, :32, 2])


def test_postprocess_gives_absolute_xyxy_boxes_without_no_object():
    logits = torch.tensor([[[2.0, 1.0, 5.0], [0.0, 3.0, 1.0]]])  # "no object" is the last class
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]]])
    (result,) = PostProcess()({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[200, 100]]))
    prob = logits.softmax(-1)
    torch.testing.assert_close(result["scores"], torch.stack([prob[0, 0, 0], prob[0, 1, 1]]))
    assert result["labels"].tolist() == [0, 1]
    torch.testing.assert_close(result["boxes"], torch.tensor([[40.0, 60.0, 60.0, 140.0], [0.0, 100.0, 50.0, 200.0]]))


def test_backbone_weights_from_a_torchvision_state_dict(tiny_config, tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    tiny_config.backbone_weights = str(tmp_path / "resnet18.pth")
    model, _, _ = build_model(tiny_config)
    body = model.backbone[0].body
    assert torch.equal(body.conv1.weight, resnet.conv1.weight)
    assert torch.equal(body.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)

    tiny_config.backbone = "resnet34"
    with pytest.raises(CheckpointError, match="do not fit torchvision's resnet34: .* missing keys"):
        build_model(tiny_config)


def test_imagenet_weights_unreachable_gives_a_hint(tiny_config, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    tiny_config.backbone_weights = "imagenet"
    with pytest.raises(CheckpointError, match="ImageNet resnet18 .*no network.*--backbone-weights PATH.*none"):
        build_model(tiny_config)


def test_dilation_needs_a_bottleneck_resnet(tiny_config):
    tiny_config.dilation = True
    with pytest.raises(ConfigError, match="resnet50/101"):
        build_model(tiny_config)


def test_build_model_refuses_dilation_of_a_stage_it_does_not_build(tiny_config):
    tiny_config.backbone, tiny_config.dilation, tiny_config.backbone_stage = "resnet50", True, 3
    with pytest.raises(ConfigError, match="needs backbone_stage = 4"):
        build_model(tiny_config)
