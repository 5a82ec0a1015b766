"""Measured memory and speed of real training steps: on a GPU from the CUDA allocator's statistics and
NVML, on the CPU from a MemoryTracker over the real tensors. An out-of-memory error is a result."""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from detr.engine.device import amp_dtype
from detr.torch_private import dump_memory_snapshot, record_memory_history
from detrdoctor.memprofile.device import device_used_bytes, process_device_bytes
from detrdoctor.memprofile.groups import OTHER, attribute_groups, group_of, label_graph
from detrdoctor.memprofile.request import PointRequest, PointResult
from detrdoctor.memprofile.step import ProfiledStep, resolve_build, synthetic_batch
from detrdoctor.memprofile.tracker import PHASE_CATEGORY, MemoryTracker

SNAPSHOT_ENTRIES = 200_000


def measure_point(request: PointRequest, isolated: bool = False) -> PointResult:
    """Warm-up steps, then timed steps; the peaks cover the timed steps only (steady state).

    `isolated`: this process measures nothing else, so its peak resident memory is the point's.
    """
    started = time.perf_counter()
    device = torch.device(request.device)
    try:
        if device.type == "cuda":
            result = _measure_cuda(request, device)
        else:
            result = _measure_cpu(request, device, isolated)
    except torch.OutOfMemoryError as e:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        result = PointResult(
            request.batch_size, request.amp, "oom", "measured", device=name, error=str(e).splitlines()[0]
        )
    _free(device, recording=bool(request.snapshot_path))
    result.wall_s = time.perf_counter() - started
    return result


def _free(device: torch.device, recording: bool) -> None:
    """Whatever the point left (an OOM's traceback held its tensors until now) goes back to the device."""
    gc.collect()
    if device.type == "cuda":
        if recording:
            record_memory_history(None)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _measure_cuda(request: PointRequest, device: torch.device) -> PointResult:
    baseline = device_used_bytes(device.index)  # before set_device creates this process's context
    torch.cuda.set_device(device)
    cfg = request.run_config()
    step = ProfiledStep(cfg, device, amp_dtype(request.amp), build=resolve_build(request.build))
    batch = synthetic_batch(request.batch_size, request.shape, cfg.model.num_classes, device)
    for _ in range(request.warmup_steps):
        step.step(batch)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    if request.snapshot_path:
        record_memory_history(SNAPSHOT_ENTRIES)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(request.timed_steps):
        step.step(batch)
    end.record()
    torch.cuda.synchronize(device)
    if request.snapshot_path:
        dump_memory_snapshot(request.snapshot_path)
    step_time = start.elapsed_time(end) / 1000 / request.timed_steps
    peak = torch.cuda.max_memory_allocated(device)
    return PointResult(
        request.batch_size,
        request.amp,
        "ok",
        "measured",
        peak_bytes=peak,
        reserved_bytes=torch.cuda.max_memory_reserved(device),
        device_bytes=process_device_bytes(device.index, baseline),
        step_time_s=step_time,
        images_per_s=request.batch_size / step_time,
        breakdown=_static_breakdown(step, peak),
        device=torch.cuda.get_device_name(device),
    )


def _static_breakdown(step: ProfiledStep, peak: int) -> dict[str, dict[str, int]]:
    """Parameters, gradients and optimizer state by module group (exact), the rest of the peak as one
    figure: attributing activations on a GPU would need the tracker, which would slow what is timed."""
    breakdown: dict[str, dict[str, int]] = {"parameters": {}, "gradients": {}, "optimizer_state": {}}

    def add(category: str, group: str, tensor: torch.Tensor) -> None:
        breakdown[category][group] = breakdown[category].get(group, 0) + tensor.untyped_storage().nbytes()

    for name, p in step.model.named_parameters():
        add("parameters", group_of(name), p)
        if p.grad is not None:
            add("gradients", group_of(name), p.grad)
        for state in step.optimizer.state.get(p, {}).values():
            add("optimizer_state", group_of(name), state)
    for tensor in step.ema_tensors():
        add("parameters", "ema", tensor)
    static = sum(sum(groups.values()) for groups in breakdown.values())
    breakdown["activations_and_temporaries"] = {OTHER: max(peak - static, 0)}
    return breakdown


def _measure_cpu(request: PointRequest, device: torch.device, isolated: bool) -> PointResult:
    tracker = MemoryTracker()
    cfg = request.run_config()

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        with tracker.scope(category=PHASE_CATEGORY[name], group=OTHER):
            yield

    def on_label(node: torch.autograd.graph.Node, group: str) -> None:
        node.register_prehook(lambda grads: setattr(tracker, "group", group))

    def backward(loss: torch.Tensor) -> None:
        label_graph(loss, OTHER, on_label)  # the loss's own nodes
        loss.backward()

    with tracker:
        with tracker.scope(category="parameters"):
            step = ProfiledStep(cfg, device, amp_dtype(request.amp), phase=phase, build=resolve_build(request.build))
        names = {p: name for name, p in step.model.named_parameters()}
        for weight_group, tensor in step.weights_by_group():
            tracker.retag(tensor, "parameters", weight_group)
        for p in step.grad_params:
            p.register_post_accumulate_grad_hook(lambda p: tracker.retag(p.grad, "gradients", group_of(names[p])))
        with tracker.scope(category="inputs"):
            batch = synthetic_batch(request.batch_size, request.shape, cfg.model.num_classes, device)
        with attribute_groups(step.model, tracker, on_label):
            for _ in range(request.warmup_steps):
                step.step(batch, backward=backward)
            for p in step.grad_params:
                for state in step.optimizer.state[p].values():
                    tracker.retag(state, "optimizer_state", group_of(names[p]))
            tracker.reset_peak()
            started = time.perf_counter()
            for _ in range(request.timed_steps):
                step.step(batch, backward=backward)
            step_time = (time.perf_counter() - started) / request.timed_steps
    # ru_maxrss is the whole process's high-water mark: the point's own only in a process of its own.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if isolated else None
    return PointResult(
        request.batch_size,
        request.amp,
        "ok",
        "measured",
        peak_bytes=tracker.peak,
        device_bytes=rss,
        step_time_s=step_time,
        images_per_s=request.batch_size / step_time,
        breakdown=tracker.breakdown(),
        device="cpu",
    )
