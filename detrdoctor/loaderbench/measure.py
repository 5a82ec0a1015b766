"""Measuring one DataLoader setting, a sweep of them, and the model's training step time."""

from __future__ import annotations

import dataclasses
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detr.config import DataConfig, RunConfig, device_batch_size
from detr.engine.loaders import batch_sampler, build_loader
from detr.errors import DataError
from detrdoctor.loaderbench.results import SettingResult
from detrdoctor.loaderbench.stages import STAGES, StageTimedDataset, TimedCollate, decoder_probe
from detrdoctor.loaderbench.verdict import explain_crash

MAX_WINDOWS = 5
H2D_REPEATS = 5
MIN_TIMED_BATCHES = 3  # the fewest batches that still give a median and a spread
STEP_BUDGET_S = 5.0  # timed model steps stop after this long (at least one is timed)


@dataclass
class BenchOptions:
    batch_size: int
    batches: int  # timed batches per setting, after the warm-up (at most)
    train: bool  # training transforms and shuffled batches (split train) or evaluation ones
    seed: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    stage_timing: bool = True
    budget_s: float | None = 5.0  # the timed window of a setting stops after this long (slow data, slow disks)


# ----------------------------------------------------------------------------- /proc readings
def _proc_fields(pid: int, name: str) -> dict[str, int]:
    """kB values of /proc/<pid>/{name} lines ("Key:  123 kB"), as bytes; empty if unreadable."""
    values = {}
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                    values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    if pid == os.getpid():  # /proc counts in clock ticks (10 ms): too coarse for a short timed window
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _total_cpu_seconds(pids: Sequence[int]) -> float | None:
    seconds = [s for s in (cpu_seconds(pid) for pid in pids) if s is not None]
    return sum(seconds) if len(seconds) == len(pids) else None


def reset_peak_rss() -> None:
    """Restart this process's VmHWM from its current RSS, so each setting reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the whole run so far


def shm_bytes() -> int | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


# ----------------------------------------------------------------------------- the loader
class CyclingBatchSampler(Sampler[list[int]]):
    """`total` batches of an epoch-based batch sampler, running through as many epochs as needed.

    One iterator covers the whole measurement, so a small dataset does not restart the workers mid-way.
    """

    def __init__(self, sampler: Any, total: int) -> None:
        if len(sampler) == 0:
            raise DataError("the dataset has fewer images than one batch: lower --batch-size")
        self.sampler, self.total = sampler, total

    def __iter__(self) -> Iterator[list[int]]:
        produced, epoch = 0, 0
        while produced < self.total:
            self.sampler.set_epoch(epoch)
            for batch in self.sampler:
                if produced == self.total:
                    return
                yield batch
                produced += 1
            epoch += 1

    def __len__(self) -> int:
        return self.total


def warmup_batches(num_workers: int, prefetch_factor: int | None) -> int:
    """Batches loaded before timing: the workers' initial prefetch, which arrives faster than steady state."""
    return max(1, num_workers * (prefetch_factor or 2))


def build_bench_loader(
    dataset: Any, data_cfg: DataConfig, opts: BenchOptions, num_workers: int, pin_memory: bool, total_batches: int
) -> DataLoader:
    """The trainer's loader (`build_loader`: sampler, collate, worker init), cycled over epochs,
    with the benchmark's prefetch and persistence options and optionally per-stage timing."""
    base = build_loader(
        dataset,
        data_cfg,
        opts.batch_size,
        train=opts.train,
        seed=opts.seed,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    timed = opts.stage_timing
    return DataLoader(
        cast(Dataset, StageTimedDataset(dataset)) if timed else dataset,  # a Dataset by duck typing (no torch import)
        batch_sampler=CyclingBatchSampler(base.batch_sampler, total_batches),
        collate_fn=TimedCollate(base.collate_fn) if timed else base.collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=base.worker_init_fn,
        generator=base.generator,
        prefetch_factor=opts.prefetch_factor if num_workers > 0 else None,
        persistent_workers=opts.persistent_workers and num_workers > 0,
    )


# ----------------------------------------------------------------------------- one setting
def window_rates(times: Sequence[float], sizes: Sequence[int], windows: int) -> list[tuple[float, float]]:
    """(images/s, batches/s) of consecutive windows; times[0] is the start, times[i] the arrival of batch i."""
    n = len(sizes)
    bounds = [round(k * n / windows) for k in range(windows + 1)]
    rates = []
    for lo, hi in zip(bounds, bounds[1:]):
        elapsed = times[hi] - times[lo]
        if hi > lo and elapsed > 0:
            rates.append((sum(sizes[lo:hi]) / elapsed, (hi - lo) / elapsed))
    return rates


def window_count(batches: int, num_workers: int) -> int:
    """Windows long enough to span a round of all workers, at least 3 (when there are 3 batches)."""
    return max(min(MAX_WINDOWS, batches // max(2, num_workers)), min(3, batches))


class _Tally:
    """Images, corrupt files and stage seconds over the batches handed to `add`."""

    def __init__(self) -> None:
        self.corrupt = 0
        self.samples = 0
        self.stage_s: dict[str, float | None] = dict.fromkeys(STAGES, 0.0)

    def add(self, batch: tuple[Any, ...], timed: bool) -> int:
        targets = batch[2]
        self.corrupt += sum(len(t.get("corrupt_files", ())) for t in targets)
        if timed:
            stages = batch[3]
            self.samples += stages["samples"]
            for stage in STAGES:
                value, total = stages[stage], self.stage_s[stage]
                self.stage_s[stage] = None if value is None or total is None else total + value
        return len(targets)

    def stages_ms(self) -> dict[str, float | None]:
        if not self.samples:
            return {}
        return {k: None if v is None else 1000 * v / self.samples for k, v in self.stage_s.items()}


def _h2d_copy_ms(images: torch.Tensor, device: torch.device) -> float:
    """Median time to copy a batch to the GPU: non_blocking when it is pinned (then the copy is async)."""
    pinned = images.is_pinned()
    times = []
    for _ in range(H2D_REPEATS):
        torch.cuda.synchronize(device)
        start = perf_counter()
        images.to(device, non_blocking=pinned)
        torch.cuda.synchronize(device)
        times.append(perf_counter() - start)
    return 1000 * statistics.median(times)


def _worker_signals(iterator: Any) -> str:
    """ " (worker signals: SIGKILL)" for workers that died of a signal; torch often reports only "exited"."""
    names = []
    for worker in getattr(iterator, "_workers", []):
        code = worker.exitcode
        if code is not None and code < 0:
            try:
                names.append(signal.Signals(-code).name)
            except ValueError:
                names.append(f"signal {-code}")
    return f" (worker signals: {', '.join(sorted(set(names)))})" if names else ""


def measure_setting(
    dataset: Any,
    data_cfg: DataConfig,
    opts: BenchOptions,
    num_workers: int,
    pin_memory: bool,
    device: torch.device | None = None,
) -> SettingResult:
    """Time to first batch, steady-state rates, CPU, memory and stages of one (num_workers, pin_memory)."""
    result = SettingResult(num_workers=num_workers, pin_memory="on" if pin_memory else "off")
    warmup = warmup_batches(num_workers, opts.prefetch_factor)
    loader = build_bench_loader(dataset, data_cfg, opts, num_workers, pin_memory, 1 + warmup + opts.batches)
    timed = opts.stage_timing
    warm, steady = _Tally(), _Tally()
    reset_peak_rss()
    iterator = None
    try:
        start = perf_counter()
        iterator = iter(loader)
        warm.add(next(iterator), timed)
        result.first_batch_s = perf_counter() - start
        for _ in range(warmup):
            warm.add(next(iterator), timed)

        pids = [os.getpid(), *(w.pid for w in getattr(iterator, "_workers", []))]
        cpu_start = _total_cpu_seconds(pids)
        times = [perf_counter()]
        sizes: list[int] = []
        deadline = times[0] + opts.budget_s if opts.budget_s else float("inf")
        while len(sizes) < opts.batches and (len(sizes) < MIN_TIMED_BATCHES or times[-1] < deadline):
            batch = next(iterator)
            times.append(perf_counter())
            sizes.append(steady.add(batch, timed))
        cpu_end = _total_cpu_seconds(pids)
        memory = [_proc_fields(pid, "status").get("VmHWM") for pid in pids]
        pss = [_proc_fields(pid, "smaps_rollup").get("Pss") for pid in pids]

        rates = window_rates(times, sizes, window_count(len(sizes), num_workers))
        image_rates = [r[0] for r in rates]
        result.images_per_s = statistics.median(image_rates)
        result.batches_per_s = statistics.median(r[1] for r in rates)
        result.images_per_s_spread = (max(image_rates) - min(image_rates)) / 2
        result.images_per_s_windows = image_rates
        if cpu_start is not None and cpu_end is not None:
            result.cpu_percent = 100 * (cpu_end - cpu_start) / (times[-1] - times[0])
        if None not in memory:
            result.peak_rss_main_bytes = memory[0]
            result.peak_rss_workers_bytes = sum(m for m in memory[1:] if m is not None)
            result.peak_rss_bytes = sum(m for m in memory if m is not None)
        if None not in pss:
            result.pss_bytes = sum(p for p in pss if p is not None)
        result.stages_ms = steady.stages_ms()
        result.images = sum(sizes)
        result.timed_batches = len(sizes)
        if device is not None and device.type == "cuda":
            result.h2d_copy_ms = _h2d_copy_ms(batch[0], device)
    except DataError as e:
        # From a worker the message is torch's "Caught DataError in DataLoader worker…" traceback: keep its last line.
        result.status, result.error = "crashed", str(e).strip().splitlines()[-1]
        result.fix = "fix the dataset (`detrdoctor env-check --coco-path ROOT` checks it)"
    except Exception as e:  # noqa: BLE001 - any loader failure is this setting's result, not the sweep's end
        result.status = "crashed"
        result.error, result.fix = explain_crash(f"{type(e).__name__}: {e}{_worker_signals(iterator)}", shm_bytes())
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - a dead worker may fail to join; the result is already recorded
                pass
    result.corrupt_images = warm.corrupt + steady.corrupt
    return result


def run_sweep(
    dataset: Any,
    data_cfg: DataConfig,
    opts: BenchOptions,
    settings: Sequence[tuple[int, bool]],
    device: torch.device | None = None,
    on_result: Callable[[SettingResult], None] | None = None,
) -> list[SettingResult]:
    """Measure every (num_workers, pin_memory) setting in order; a crash is one setting's result."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    results = []
    with decoder_probe() if opts.stage_timing else nullcontext():
        for num_workers, pin in settings:
            result = measure_setting(dataset, data_cfg, opts, num_workers, pin, device)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


# ----------------------------------------------------------------------------- the model's step
def measure_step_time(cfg: RunConfig, dataset: Any, steps: int = 3) -> tuple[float, str]:
    """(median seconds of a training step, device): forward, loss, backward, clipping, optimizer step.

    Random weights (no download): a step costs the same with trained ones. On a GPU one untimed step
    first (CUDA context, kernel loading, cuDNN autotuning); the CPU has nothing to warm up that the next
    multi-scale batch would reuse. Then up to `steps` timed steps within STEP_BUDGET_S. Measured after
    the sweep, so the model's memory does not inflate the workers forked before it.
    """
    from detr import build_model
    from detr.engine.device import resolve_amp_dtype, resolve_device
    from detr.engine.optim import build_optimizer
    from detr.engine.trainer import move_targets

    device = resolve_device(cfg.train.device)
    amp_dtype = resolve_amp_dtype(cfg.train.amp, device)
    torch.manual_seed(cfg.train.seed)
    model_cfg = dataclasses.replace(cfg.model, backbone_weights="none")
    model, criterion, _ = build_model(model_cfg, train_backbone=cfg.train.lr_backbone > 0)
    model.to(device).train()
    criterion.to(device)
    optimizer = build_optimizer(model, cfg.train)
    loader = build_loader(
        dataset,
        cfg.data,
        device_batch_size(cfg.train),
        train=True,
        seed=cfg.train.seed,
        num_workers=0,
        pin_memory=False,
    )
    batch_sampler(loader).set_epoch(0)
    warmup = 1 if device.type == "cuda" else 0
    batches = CyclingBatchSampler(loader.batch_sampler, warmup + steps)
    times = []
    for indices in batches:
        images, mask, targets = loader.collate_fn([dataset[i] for i in indices])
        images, mask, targets = images.to(device), mask.to(device), move_targets(targets, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(images, mask)
        losses = criterion(outputs, targets)
        loss = sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(perf_counter() - start)
        if len(times) > warmup and sum(times[warmup:]) > STEP_BUDGET_S:
            break
    return statistics.median(times[warmup:]), str(device)
