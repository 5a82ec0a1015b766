"""CPU bf16 autocast (`--amp bf16`) stays close to float32: the lever's numerics check.

The model runs in bf16 (8 bits of mantissa: ~0.4 % per rounding), the matcher and the losses in float32.
Stated tolerance: the loss within 2 %, every trainable group's gradient within 10 % of its float32 norm
and pointing the same way (cosine > 0.98).
"""

import copy

import torch

from detr import build_model
from detr.engine.step import TrainingStep
from detrdoctor.memprofile.step import synthetic_batch


def loss_and_grads(model, criterion, amp: torch.dtype | None, batch) -> tuple[float, list[torch.Tensor]]:
    params = [p for p in model.parameters() if p.requires_grad]
    step = TrainingStep(
        model, criterion, torch.optim.SGD(params, lr=0.0), params, device_type="cpu", amp_dtype=amp, clip_max_norm=0.0
    )
    loss, _ = step.loss(batch.images, batch.mask, batch.targets)
    loss.backward()
    return float(loss), [p.grad.flatten() for p in params]


def test_bf16_loss_and_gradients_stay_within_the_stated_tolerance(tiny_config):
    torch.manual_seed(0)
    model, criterion, _ = build_model(tiny_config)
    model.train()
    batch = synthetic_batch(2, (64, 80), tiny_config.num_classes, "cpu")
    loss32, grads32 = loss_and_grads(model, criterion, None, batch)
    loss16, grads16 = loss_and_grads(copy.deepcopy(model), criterion, torch.bfloat16, batch)
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    g32, g16 = torch.cat(grads32), torch.cat(grads16)
    assert abs(g16.norm() - g32.norm()) <= 0.1 * g32.norm()
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98


def test_the_cpu_bf16_features_are_read_from_the_flags():
    from detr.engine.device import cpu_bf16_features

    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    sapphire_rapids = "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_bf16_features(zen4) == ["avx512_bf16"]
    assert cpu_bf16_features(sapphire_rapids) == ["avx512_bf16", "amx_bf16"]
    assert cpu_bf16_features("flags\t\t: fpu sse avx2\n") == []
    assert cpu_bf16_features("") == []
