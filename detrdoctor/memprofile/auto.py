"""`train --batch-size auto`: the largest batch that fits the device with a margin, by memprofile's own means.

On a GPU the estimate's answer is measured (a real training step in a fresh process) and, should it not fit,
the measured search goes below it; without one the estimate decides (FakeTensor trace, no allocation). The
shape is the worst case of the training and the evaluation transforms together: a training step at that shape
needs more memory than inference at it (no gradients or kept activations beside the same weights), so one
answer covers the evaluation batch too. The run's AMP mode and weight average are part of the step measured.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from detr.config import RunConfig
from detr.errors import ConfigError
from detrdoctor.memprofile.gpus import GPU, GiB
from detrdoctor.memprofile.request import PointResult, request_for
from detrdoctor.memprofile.search import LIMIT, find_max
from detrdoctor.memprofile.summary import fits

AUTO_MARGIN = 0.10  # memprofile's default safety margin: the share of the device memory left free


@dataclass
class AutoBatch:
    """The chosen batch size and how it was found (the `batch_size_auto` event's fields)."""

    batch_size: int
    source: str  # measured | estimated
    margin: float
    target: str  # the memory planned for: a GPU, a --gpu-memory size or the host's available memory
    usable_bytes: int
    shape: tuple[int, int]
    amp: str
    limit: int  # the largest batch size considered (the optimizer's batch, the training set)
    trials: list[int] = field(default_factory=list)  # batch sizes tried, in order
    used_bytes: int | None = None  # what the chosen batch needs, by the source's figure

    def describe(self) -> str:
        how = "measured on the GPU" if self.source == "measured" else "estimated by memprofile, no allocation"
        needs = f", needs {self.used_bytes / GiB:.2f} GiB" if self.used_bytes is not None else ""
        capped = f"; capped at {self.limit}" if self.batch_size == self.limit else ""
        return (
            f"--batch-size auto: {self.batch_size} images per forward pass ({how}{needs}) of "
            f"{self.usable_bytes / GiB:.2f} GiB usable on {self.target} with a {self.margin:.0%} margin, "
            f"at the worst-case {self.shape[0]}×{self.shape[1]} batch, amp {self.amp}{capped}"
        )


def run_shape(cfg: RunConfig) -> tuple[int, int]:
    """The worst-case padded batch of training and of evaluation, side by side."""
    from detr.data import worst_case_batch_shape

    try:
        train = worst_case_batch_shape(cfg.data, train=True)
        val = worst_case_batch_shape(cfg.data, train=False)
    except ValueError as e:
        raise ConfigError(f"--batch-size auto: {e}; set [data] max_size") from None
    return max(train[0], val[0]), max(train[1], val[1])


def host_memory() -> GPU:
    """The CPU's budget: the memory the OS reports available now (not counting what could be swapped)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return GPU(f"the host ({available / GiB:.1f} GiB available)", available, bf16=True)


def choose_batch_size(
    cfg: RunConfig,
    target: GPU,
    *,
    measure_on: str | None = None,
    margin: float = AUTO_MARGIN,
    limit: int = LIMIT,
    on_trial: Callable[[str, int], None] | None = None,
) -> AutoBatch:
    """The largest batch size ≤ `limit` whose training step fits `target`'s memory less `margin`.

    `measure_on` ("cuda:N") measures there, starting from the estimate's answer; without it the estimate
    decides. `target` is injectable (memprofile's --gpu-memory): the selection is testable on any machine.
    `on_trial(mode, batch_size)` is told of every point before it runs (progress).
    """
    from detrdoctor.memprofile.estimate import Estimator

    cfg = copy.deepcopy(cfg)
    cfg.train.batch_size = 1  # a placeholder: every point sets its own
    shape = run_shape(cfg)
    usable = target.usable_bytes(margin)
    results: dict[tuple[str, int], PointResult] = {}

    def point(mode: str, batch_size: int) -> PointResult:
        if on_trial is not None:
            on_trial(mode, batch_size)
        if mode == "estimated":
            result = estimator.estimate(batch_size, cfg.train.amp, shape)
        else:
            from detrdoctor.memprofile.isolation import run_isolated

            request = request_for(cfg, batch_size=batch_size, amp=cfg.train.amp, shape=shape, device=measure_on)
            result = run_isolated(request)
        results[mode, batch_size] = result
        return result

    estimator = Estimator(cfg)
    estimated = find_max(lambda b: bool(fits(point("estimated", b), usable)), limit=limit)
    trials = list(estimated.trials)
    best, source = estimated.best, "estimated"
    if measure_on is not None:
        source = "measured"
        known = {}
        if best is not None:
            trials.append(best)
            known[best] = bool(fits(point("measured", best), usable))
        if best is None or not known[best]:
            below = find_max(lambda b: bool(fits(point("measured", b), usable)), known, limit=limit)
            trials += below.trials
            best = below.best
    if best is None:
        raise ConfigError(
            f"--batch-size auto: not even one image fits {usable / GiB:.2f} GiB ({target.name} less a "
            f"{margin:.0%} margin) at the worst-case {shape[0]}×{shape[1]} batch, amp {cfg.train.amp}; "
            "try --amp bf16, a smaller [data] max_size, or see `detrdoctor memprofile`"
        )
    chosen = results.get((source, best))
    return AutoBatch(
        batch_size=best,
        source=source,
        margin=margin,
        target=target.name,
        usable_bytes=usable,
        shape=shape,
        amp=cfg.train.amp,
        limit=limit,
        trials=trials,
        used_bytes=_used(chosen),
    )


def _used(result: PointResult | None) -> int | None:
    from detrdoctor.memprofile.summary import used_bytes

    return used_bytes(result) if result is not None else None


def resolve_auto_batch(cfg: RunConfig, gpu_memory: str | None, train_images: int) -> AutoBatch:
    """`batch_size = "auto"` of a run → memprofile's answer, set on `cfg` (config.toml records the int).

    The budget: --gpu-memory, else the GPU trained on (measured there; under torchrun estimated, so that every
    rank gets the same answer), else the host's available memory (estimated). The answer is capped by the
    optimizer's batch (--effective-batch) and by the training images per process (one batch per epoch at least).
    """
    from rich.console import Console

    from detr.engine.device import resolve_device
    from detrdoctor.memprofile.device import cuda_device
    from detrdoctor.memprofile.gpus import resolve_target

    device = resolve_device(cfg.train.device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    measure_on = None
    if gpu_memory:
        target = resolve_target(gpu_memory)
    elif device.type == "cuda":
        index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        gpu = cuda_device(index)
        target = GPU(gpu.name, gpu.total_bytes, gpu.bf16)
        measure_on = f"cuda:{index}" if world_size == 1 else None
    else:
        target = host_memory()
    limit = max(1, min(LIMIT, cfg.train.effective_batch or LIMIT, train_images // max(world_size, 1)))
    with Console(stderr=True, highlight=False).status("--batch-size auto") as status:

        def on_trial(mode: str, batch_size: int) -> None:
            verb = "estimating" if mode == "estimated" else "measuring"
            status.update(f"--batch-size auto: {verb} batch {batch_size} on {target.name}")

        choice = choose_batch_size(cfg, target, measure_on=measure_on, limit=limit, on_trial=on_trial)
    cfg.train.batch_size = choice.batch_size
    return choice


class BatchAdvice:
    """memprofile's recommended batch size for the out-of-memory line (the trainer's `batch_advisor`): the
    auto choice, else an estimate for the device's memory, computed when first asked (after the failure)."""

    def __init__(self, cfg: RunConfig, gpu_memory: str | None, choice: AutoBatch | None = None):
        self.cfg, self.gpu_memory, self.choice = copy.deepcopy(cfg), gpu_memory, choice

    def __call__(self) -> int | None:
        if self.choice is None:
            from detr.engine.device import resolve_device
            from detrdoctor.memprofile.device import cuda_device
            from detrdoctor.memprofile.gpus import resolve_target

            device = resolve_device(self.cfg.train.device)
            if self.gpu_memory:
                target = resolve_target(self.gpu_memory)
            elif device.type == "cuda":
                gpu = cuda_device(device.index or 0)
                target = GPU(gpu.name, gpu.total_bytes, gpu.bf16)
            else:
                target = host_memory()
            try:
                self.choice = choose_batch_size(self.cfg, target)
            except ConfigError:  # not even one image fits
                return None
        return self.choice.batch_size
