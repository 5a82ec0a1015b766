"""Estimated CUDA memory of one training step, computed on any machine without allocating it.

The step runs under FakeTensorMode with fake CUDA tensors: every operator computes only shapes, dtypes
and devices, so CUDA autocast, the fused dropout and the fused AdamW behave as on a GPU; attention is sent
to the kernel a GPU would pick (see _CudaAttentionKernels). The backward pass
is driven from Python (see backward.py) and a MemoryAccount with a model of the caching allocator counts
the storages. Added on top, as estimates: cuBLAS workspaces and the CUDA context.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from detr.config import RunConfig
from detr.engine.device import amp_dtype
from detr.torch_private import DataDependentOutputException, FakeTensorMode, efficient_attention
from detrdoctor.memprofile.allocator import CachingAllocatorModel
from detrdoctor.memprofile.backward import PythonBackward
from detrdoctor.memprofile.groups import OTHER, attribute_groups, group_of, node_group
from detrdoctor.memprofile.request import PointResult
from detrdoctor.memprofile.step import ProfiledStep, resolve_build, synthetic_batch
from detrdoctor.memprofile.tracker import PHASE_CATEGORY, MemoryAccount

MiB = 1 << 20
# cuBLAS takes a workspace per (thread, stream) from the caching allocator: the forward runs on the
# main thread, the backward on autograd's device thread; 32 MiB each is the default on Hopper and later.
CUBLAS_WORKSPACES = 2 * 32 * MiB
# Driver, runtime and kernel images of a process that used cuBLAS and cuDNN (lazy module loading).
CUDA_CONTEXT = 500 * MiB


class _AccountingFakeMode(MemoryAccount, FakeTensorMode):
    """FakeTensorMode that accounts for the storages its operators create (one mode, not two stacked:
    every operator passes through here, so each Python layer costs). A value fake tensors cannot have
    (an .item(), a data-dependent branch) becomes a neutral one, which changes no shape the step allocates.
    """

    def __init__(self) -> None:
        MemoryAccount.__init__(self)
        FakeTensorMode.__init__(self)
        self._depth = 0

    def start(self) -> None:
        """A fresh account (and allocator model) for the next point; the fake tensors stay."""
        MemoryAccount.__init__(self, CachingAllocatorModel())

    def dispatch(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            try:
                return super().dispatch(func, types, args, kwargs)
            except DataDependentOutputException:
                dtype = args[0].dtype
                return True if dtype == torch.bool else 1.0 if dtype.is_floating_point else 1
        # Operators that fake tensors decompose re-enter here: only the outermost one is a GPU kernel.
        self._depth += 1
        try:
            out = super().dispatch(func, types, args, kwargs)
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.track_outputs(func, out)
        return out


class _FakeDeepcopy(TorchFunctionMode):
    """copy.deepcopy of a fake tensor gives a fake tensor of the same mode (PyTorch's own goes through a
    storage copy that lands in another mode); DETR deep-copies its transformer layers."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is not torch.Tensor.__deepcopy__:
            return func(*args, **(kwargs or {}))
        tensor, memo = args
        if id(tensor) not in memo:
            copied = tensor.detach().clone().requires_grad_(tensor.requires_grad)
            if getattr(tensor, "_is_param", False):
                copied._is_param = True  # what makes isinstance(copied, nn.Parameter) hold
            memo[id(tensor)] = copied
        return memo[id(tensor)]


class _CudaAttentionKernels(TorchFunctionMode):
    """F.scaled_dot_product_attention as a GPU runs it. Its kernel choice sees no GPU behind fake CUDA
    tensors and takes the math path, which holds the [B, heads, L, S] weights (and their dropout mask) that
    the GPU kernels never materialise. Every call goes to the memory-efficient kernel instead: the one CUDA
    picks for DETR's masked encoder and cross-attention in any dtype (flash attention takes no mask and no
    fp32); where CUDA may pick flash, the unmasked bf16 decoder self-attention, flash keeps the same output
    and log-sum-exp for the backward, and dropout is drawn inside either kernel."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is not F.scaled_dot_product_attention:
            return func(*args, **(kwargs or {}))
        return _efficient_attention(*args, **(kwargs or {}))


def _efficient_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """SDPA's arguments, its CUDA preprocessing, and the memory-efficient kernel (its output only)."""
    if torch.is_autocast_enabled("cuda"):  # SDPA runs in the autocast dtype
        query, key, value = (t.to(torch.get_autocast_dtype("cuda")) for t in (query, key, value))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:  # as SDPA converts it: -inf where attending is not allowed
            attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                attn_mask.logical_not(), float("-inf")
            )
        attn_mask = attn_mask.expand(*query.shape[:-1], key.shape[-2])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return efficient_attention(query, key, value, attn_mask, needs_grad, dropout_p, is_causal, scale)


@contextmanager
def cuda_autocast(dtype: torch.dtype | None) -> Iterator[None]:
    """torch.autocast("cuda") that also works without a GPU (torch.autocast turns itself off there)."""
    if dtype is None:
        yield
        return
    previous = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", previous[0])
        torch.set_autocast_dtype("cuda", previous[1])


class _PlaceholderMatcher(torch.nn.Module):
    """A fixed assignment in place of the Hungarian matching, which needs real cost values. Its cost
    matrices ([layers·B, queries, targets], a few hundred KiB, freed before the losses) are left out."""

    @torch.no_grad()
    def match_layers(self, layer_outputs, targets):
        return [
            [(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in targets] for _ in layer_outputs
        ]


class Estimator:
    """Estimates points of one profile. The fake model, its gradients and optimizer state are built once
    and shared; each point starts from a fresh account in which they are registered first."""

    def __init__(self, cfg: RunConfig, build: str | None = None):
        self.cfg = copy.deepcopy(cfg)
        self.cfg.model.backbone_weights = "none"
        self.cfg.train.channels_last = False  # a layout, not a size; fake modules cannot be converted
        self.build = build
        self._mode = _AccountingFakeMode()
        self._step: ProfiledStep | None = None

    def estimate(self, batch_size: int, amp: str, shape: tuple[int, int]) -> PointResult:
        """The estimated CUDA memory of a training step in steady state (the previous step's gradients and
        the optimizer state alive), with the breakdown at its peak."""
        started = time.perf_counter()
        mode, dtype = self._mode, amp_dtype(amp)
        with warnings.catch_warnings():
            # torch.autocast("cuda", enabled=False) in the model warns that there is no GPU: expected here.
            warnings.simplefilter("ignore")
            with mode:
                step = self._built()
                mode.start()
                group: dict[torch.Tensor, str] = {p: group_of(name) for name, p in step.model.named_parameters()}
                for weight_group, tensor in step.weights_by_group():
                    mode.retag(tensor, "parameters", weight_group)
                for p in step.grad_params:
                    if p.grad is not None:  # the previous step's, alive in steady state
                        mode.retag(p.grad, "gradients", group[p])
                    for state in step.optimizer.state[p].values():
                        mode.retag(state, "optimizer_state", group[p])
                with mode.scope(category="inputs"):
                    batch = synthetic_batch(batch_size, shape, self.cfg.model.num_classes, step.device)
                engine = PythonBackward(
                    on_node=lambda node: mode.scope(group=node_group(node)),
                    on_grad=lambda p, grad: mode.retag(grad, "gradients", group[p]),
                )
                mode.reset_peak()
                try:
                    with attribute_groups(step.model, mode), engine.recording(), _CudaAttentionKernels():
                        step.step(batch, backward=engine.backward, autocast=cuda_autocast(dtype))
                except torch.OutOfMemoryError as e:  # a model may check sizes itself: its verdict stands
                    return PointResult(
                        batch_size,
                        amp,
                        "oom",
                        "estimated",
                        error=str(e).splitlines()[0],
                        device="CUDA (estimated)",
                        wall_s=time.perf_counter() - started,
                    )
                del batch
        breakdown = mode.breakdown()
        breakdown["workspace"] = {"cublas": CUBLAS_WORKSPACES}
        assert mode.allocator is not None  # started above
        reserved = mode.allocator.peak_reserved + CUBLAS_WORKSPACES
        return PointResult(
            batch_size=batch_size,
            amp=amp,
            status="ok",
            mode="estimated",
            peak_bytes=mode.peak + CUBLAS_WORKSPACES,
            reserved_bytes=reserved,
            device_bytes=reserved + CUDA_CONTEXT,
            breakdown=breakdown,
            device="CUDA (estimated)",
            wall_s=time.perf_counter() - started,
        )

    def _built(self) -> ProfiledStep:
        """The fake model on "cuda", after a first optimizer step (gradients and moments allocated)."""
        if self._step is None:
            with _FakeDeepcopy():
                step = ProfiledStep(
                    self.cfg,
                    torch.device("cuda", 0),
                    None,
                    phase=self._phase,
                    build=resolve_build(self.build),
                    grad_scaler=False,
                )
            if hasattr(step.criterion, "matcher"):
                step.criterion.matcher = _PlaceholderMatcher()
            step.prime()
            self._step = step
        return self._step

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        with self._mode.scope(category=PHASE_CATEGORY[name], group=OTHER):
            yield
