"""`[train] compile = true`: the compiled model computes the eager model's loss and gradients (to rounding)."""

import copy

import torch

from detr import build_model
from detr.config import TrainConfig
from detr.engine.compile import compile_model
from detrdoctor.memprofile.step import synthetic_batch


def loss_and_grads(model, criterion, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    outputs = model(batch.images, batch.mask)
    losses = criterion(outputs, batch.targets)
    loss = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
    params = [p for p in model.parameters() if p.requires_grad]
    return loss.detach(), list(torch.autograd.grad(loss, params))


def test_the_compiled_model_has_the_eager_loss_and_gradients(tiny_config):
    torch.manual_seed(0)
    eager, criterion, _ = build_model(tiny_config)
    eager.train()
    compiled = copy.deepcopy(eager)
    compile_model(compiled, TrainConfig(compile=True))
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their keys
    batch = synthetic_batch(2, (64, 80), tiny_config.num_classes, "cpu")
    loss, grads = loss_and_grads(eager, criterion, batch)
    compiled_loss, compiled_grads = loss_and_grads(compiled, criterion, batch)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-4, atol=1e-5)
    for ours, reference in zip(compiled_grads, grads):
        torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-5)


def test_compiles_are_counted_and_a_third_size_reuses_the_dynamic_graph():
    from detr.engine.compile import CompileCounts, recompile_limit

    before = CompileCounts.now()
    layer = torch.nn.Linear(4, 4)
    compile_model(layer, TrainConfig(compile=True))
    layer(torch.randn(2, 4))
    after_first = CompileCounts.now()
    assert after_first.graphs == before.graphs + 1
    layer(torch.randn(3, 4))  # a new size: one recompile, with the size dynamic
    layer(torch.randn(5, 4))  # reuses it: no storm
    assert CompileCounts.now().graphs == after_first.graphs + 1
    assert CompileCounts.now().graph_breaks == before.graph_breaks
    assert recompile_limit() >= 2
