"""torch.compile of the model, as `[train] compile` and `compile_backbone` ask.

The whole model is compiled in place (`nn.Module.compile`: the module, its parameters and its state_dict
keys stay what they were, so checkpoints, the weight average and the callbacks' hooks see the eager
model's names). DETR's random multi-scale resize changes the input shape from batch to batch: the first
graph is compiled for the first shape, the first change recompiles once with dynamic sizes
(`dynamic=None`, PyTorch's automatic dynamic shapes), and later sizes reuse that graph.

Measured on a 2-core AMD EPYC (Zen 4) VM shared with other agents, DETR-R50 at 512×512, batch 2, frozen
backbone: the first compile took ~240 s and the recompile at the first new size ~170 s; once compiled, the
CPU step took 0.95× eager's (rounds 0.87–0.95, benchmarks/bench_vs_hf.py --levers compile), and a third size
failed inside inductor's CPU convolution with a stride assertion (torch 2.14.1). So it stays off by default:
it is the GPU lever (`benchmarks/gpu_check.sh` measures it there).
"""

from __future__ import annotations

from torch import nn

from detr.config import TrainConfig


def compile_model(model: nn.Module, cfg: TrainConfig) -> None:
    """Compile `model` in place when `cfg.compile` (all of it) or `cfg.compile_backbone` (its backbone) asks."""
    if cfg.compile:
        model.compile(dynamic=None)
    elif cfg.compile_backbone:
        backbone = model.get_submodule("backbone")
        backbone.compile()
