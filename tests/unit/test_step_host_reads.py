"""A training step reads no value back to the host: on a GPU each such read waits for the queue to drain.

The one device→host transfer of a step is the matcher's cost matrices (for scipy), a no-op on the CPU; what
is counted here is every op whose result the host must see: `.item()`, `float()`/`bool()` of a tensor
(`_local_scalar_dense`, `is_nonzero`) and data-sized shapes (`nonzero`, `masked_select`).
"""

from collections import Counter

import torch

from detr import build_model
from detr.engine.step import TrainingStep
from detr.torch_private import TorchDispatchMode
from detrdoctor.memprofile.step import synthetic_batch

HOST_READS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select", "aten.item")


class HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_READS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_nothing_back_to_the_host(tiny_config):
    tiny_config.dropout = tiny_config.attention_dropout = 0.1  # the dropout paths too
    model, criterion, _ = build_model(tiny_config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, fused=True)
    step = TrainingStep(model, criterion, optimizer, params, device_type="cpu", amp_dtype=None, clip_max_norm=0.1)
    batch = synthetic_batch(2, (64, 80), tiny_config.num_classes, "cpu")
    batch.mask[1, :, 60:] = True  # real key padding
    with HostReads() as reads:
        result = step.run(batch.images, batch.mask, batch.targets)
    assert result.stepped
    assert reads.counts == Counter()
    with HostReads() as reads:
        float(result.loss)  # the counter does see a read
    assert reads.counts["aten._local_scalar_dense"] == 1
