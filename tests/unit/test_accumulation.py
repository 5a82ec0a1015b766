"""Gradient accumulation in the one training step: micro-batches give the whole batch's gradient and loss."""

from __future__ import annotations

import pytest
import torch

from detr import build_model
from detr.engine.step import TrainingStep


def batch_with_uneven_boxes(num_classes: int) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Four padded images holding 1, 4, 0 and 2 boxes: micro-batches carry very different shares of the boxes."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 80, generator=generator)
    mask = torch.zeros(4, 64, 80, dtype=torch.bool)
    mask[0, :, 60:] = True  # padding, as a collated batch of unequal images has
    mask[2, 48:, :] = True
    targets = []
    for count in (1, 4, 0, 2):
        centres = 0.3 + 0.4 * torch.rand(count, 2, generator=generator)
        sizes = 0.1 + 0.3 * torch.rand(count, 2, generator=generator)
        labels = torch.randint(0, num_classes, (count,), generator=generator)
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes], 1)})
    return images, mask, targets


def gradients(tiny_config, micro_batch_size: int | None) -> tuple[list[torch.Tensor], dict[str, float]]:
    """The unclipped gradients and loss terms of one step from the same initial weights (no update made)."""
    torch.manual_seed(0)
    model, criterion, _ = build_model(tiny_config, train_backbone=True)
    params = [p for p in model.parameters() if p.requires_grad]
    step = TrainingStep(
        model,
        criterion,
        torch.optim.AdamW(params, lr=1e-4),
        params,
        device_type="cpu",
        amp_dtype=None,
        clip_max_norm=0.1,
        micro_batch_size=micro_batch_size,
    )
    images, mask, targets = batch_with_uneven_boxes(tiny_config.num_classes)
    seen: dict[str, float] = {}

    def keep(result) -> bool:
        seen.update({k: float(v.detach()) for k, v in result.loss_dict.items()}, loss=float(result.loss.detach()))
        return True  # veto the optimizer step: the gradients stay as the backward left them

    step.run(images, mask, targets, after_backward=keep)
    return [p.grad.clone() for p in params], seen


@pytest.mark.parametrize("micro_batch_size", [1, 3])  # 3: micro-batches of unequal size (3 + 1)
def test_micro_batches_give_the_whole_batchs_gradient(tiny_config, micro_batch_size):
    # The tiny model's backbone uses FrozenBatchNorm2d and no dropout: every image is computed alike in any batch.
    whole, whole_terms = gradients(tiny_config, None)
    accumulated, accumulated_terms = gradients(tiny_config, micro_batch_size)
    for full, parts in zip(whole, accumulated):
        torch.testing.assert_close(parts, full, rtol=1e-4, atol=1e-6)
    assert accumulated_terms.keys() == whole_terms.keys()
    for key in ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_giou_0", "cardinality_error"):
        assert accumulated_terms[key] == pytest.approx(whole_terms[key], rel=1e-5), key


def test_weighting_micro_batches_by_images_would_not(tiny_config):
    """The control: the plain mean of the micro-batches' losses (each normalised by its own box count) is not
    the batch's loss, so the equality above rests on the box shares."""
    from detr.engine.step import weighted_loss

    torch.manual_seed(0)
    model, criterion, _ = build_model(tiny_config, train_backbone=True)
    images, mask, targets = batch_with_uneven_boxes(tiny_config.num_classes)
    with torch.no_grad():
        whole = weighted_loss(criterion(model(images, mask), targets), criterion.weight_dict)
        per_image = [
            weighted_loss(
                criterion(model(images[i : i + 1], mask[i : i + 1]), targets[i : i + 1]), criterion.weight_dict
            )
            for i in range(4)
        ]
    assert float(sum(per_image) / 4) != pytest.approx(float(whole), rel=1e-3)
