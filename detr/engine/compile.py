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

Every compile is counted (`CompileCounts.now()`): the trainer logs a `compile` event after each epoch that
compiled something, so a recompilation storm shows in the log instead of only as a slow run. It warns once
the count reaches dynamo's `recompile_limit`, past which dynamo stops compiling the model and runs it eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from detr.config import TrainConfig


@dataclass(frozen=True)
class CompileCounts:
    """What dynamo has compiled in this process so far."""

    graphs: int  # frames compiled: the first compile and every recompile (a new shape, a new guard)
    graph_breaks: int  # places where a graph ends early and Python runs between two graphs

    @staticmethod
    def now() -> CompileCounts:
        from torch._dynamo.utils import counters

        return CompileCounts(counters["frames"]["ok"], sum(counters["graph_break"].values()))


def recompile_limit() -> int:
    """How many graphs dynamo compiles for one function before it gives up and runs it eagerly."""
    import torch._dynamo.config

    return int(torch._dynamo.config.recompile_limit)


def compile_model(model: nn.Module, cfg: TrainConfig) -> None:
    """Compile `model` in place when `cfg.compile` (all of it) or `cfg.compile_backbone` (its backbone) asks."""
    if cfg.compile:
        model.compile(dynamic=None)
    elif cfg.compile_backbone:
        backbone = model.get_submodule("backbone")
        backbone.compile()
