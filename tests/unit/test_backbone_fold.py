"""The frozen BatchNorm folded into its convolution computes what the two separate modules compute."""

import copy

import torch

from detr import build_model
from detr.backbone import FoldedConv2d, FrozenBatchNorm2d, fold_frozen_batchnorm, unfold_frozen_batchnorm
from tests.unit.test_model import randomize_frozen_batchnorm


def test_every_frozen_batchnorm_of_the_resnet_is_folded_and_the_keys_stay(tiny_config):
    model, _, _ = build_model(tiny_config)
    reference = copy.deepcopy(model)
    unfold_frozen_batchnorm(reference)
    folded = [m for m in model.backbone.modules() if isinstance(m, FoldedConv2d)]
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(folded) == len(norms) == 20  # resnet18: stem, 16 block convolutions, 3 downsamples
    assert all(n.folded for n in norms)
    assert not any(isinstance(m, FoldedConv2d) for m in reference.modules())
    assert list(model.state_dict()) == list(reference.state_dict())
    assert fold_frozen_batchnorm(model) == 0  # already folded: nothing to fold twice


def test_folded_forward_and_gradients_match_the_separate_modules(tiny_config):
    torch.manual_seed(0)
    model, _, _ = build_model(tiny_config, train_backbone=True)
    randomize_frozen_batchnorm(model)
    reference = copy.deepcopy(model)
    unfold_frozen_batchnorm(reference)
    images, mask = torch.randn(2, 3, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 80:] = True
    outputs = [m.backbone(images, mask)[0] for m in (model, reference)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    for out in outputs:
        out.square().mean().backward()
    for (name, p), q in zip(model.backbone.named_parameters(), reference.backbone.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_a_copy_folds_with_its_own_norms(tiny_config):
    """The weight average deep-copies the model: its convolutions must read the copy's buffers."""
    model, _, _ = build_model(tiny_config)
    twin = copy.deepcopy(model)
    conv = twin.backbone[0].body.conv1
    assert isinstance(conv, FoldedConv2d) and conv._norm is twin.backbone[0].body.bn1
