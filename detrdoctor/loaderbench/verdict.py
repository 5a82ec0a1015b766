"""Judgement on plain results: GPU starvation per setting, the recommended setting, and crash explanations."""

from __future__ import annotations

import re
from collections.abc import Sequence

from detrdoctor.loaderbench.results import Recommendation, SettingResult, SettingStarvation, Starvation

WITHIN_BEST = 0.05  # a setting this close to the fastest counts as fast: fewer workers then win
NOISE_WAIT = 0.05  # waiting less than this share of a step is within measurement noise, not starvation

STAGE_REMEDIES = {
    "read": "move the dataset to faster storage (local NVMe, or RAM)",
    "decode": "decode on the GPU (torchvision.io.decode_jpeg on cuda, or NVIDIA DALI) or store smaller images",
    "augment": "augment on the GPU, or train on smaller images (lower max_size / train_scales)",
    "collate": "train on smaller images (lower max_size / train_scales): padding and copying cost less",
}
CPU_STAGE_REMEDIES = {
    "read": STAGE_REMEDIES["read"],
    "decode": "store the images pre-resized to the training scales, so decoding is cheaper",
    "augment": "train on smaller images (lower max_size / train_scales)",
    "collate": STAGE_REMEDIES["collate"],
}


def step_wait(loader_batch_s: float, step_time_s: float, num_workers: int) -> tuple[float, float]:
    """(seconds the model waits per step, that wait's share of the step period).

    Workers load while the model computes, so only a loader slower than the step makes it wait. With
    0 workers the main process loads between steps: every batch's loading time is a wait.
    """
    if num_workers == 0:
        wait = loader_batch_s
        period = loader_batch_s + step_time_s
    else:
        wait = max(0.0, loader_batch_s - step_time_s)
        period = max(loader_batch_s, step_time_s)
    return wait, (wait / period if period > 0 else 0.0)


def judge_starvation(
    results: Sequence[SettingResult], step_time_s: float | None, source: str, device: str | None
) -> Starvation:
    """Per setting, whether the model would wait for data and for what share of each step."""
    verdict = Starvation(step_time_s=step_time_s, step_time_source=source, device=device)
    for r in results:
        entry = SettingStarvation(r.num_workers, r.pin_memory, None, None, None, None)
        if r.ok:
            entry.loader_batch_s = 1 / _measured(r.batches_per_s)
            if step_time_s is not None:
                entry.wait_s, entry.wait_fraction = step_wait(entry.loader_batch_s, step_time_s, r.num_workers)
                entry.starved = entry.wait_fraction > NOISE_WAIT
        verdict.per_setting.append(entry)
    return verdict


def _per_worker_count(results: Sequence[SettingResult], has_gpu: bool) -> list[SettingResult]:
    """One result per num_workers, with the pin-memory choice applied.

    With a GPU, pinned memory lets the host→device copy overlap compute, so it is kept unless its
    pin-memory thread costs more than WITHIN_BEST of the throughput; without a GPU it does nothing.
    """
    chosen: dict[int, SettingResult] = {}
    for n in sorted({r.num_workers for r in results if r.ok}):
        by_pin = {r.pin_memory: r for r in results if r.ok and r.num_workers == n}
        on, off = by_pin.get("on"), by_pin.get("off")
        if on and (off is None or (has_gpu and _images_per_s(on) >= (1 - WITHIN_BEST) * _images_per_s(off))):
            chosen[n] = on
        else:
            chosen[n] = off or by_pin["on"]  # n has at least one completed result
    return list(chosen.values())


def _measured(value: float | None) -> float:
    """A rate or share of a completed setting (`SettingResult.ok`), which its measurement always sets."""
    assert value is not None
    return value


def _images_per_s(r: SettingResult) -> float:
    return _measured(r.images_per_s)


def _dominant_stage(stages_ms: dict[str, float | None]) -> str | None:
    known = {k: v for k, v in stages_ms.items() if v is not None}
    return max(known, key=lambda k: known[k]) if known else None


def _remedy(best: SettingResult, swept: Sequence[int], cpu_count: int, has_gpu: bool) -> str:
    """What to change when even the fastest setting is too slow."""
    largest = max(swept)
    if best.num_workers == largest and largest < cpu_count:
        return f"throughput still rises with workers: try --num-workers up to {cpu_count} (the CPU count)"
    stage = _dominant_stage(best.stages_ms)
    by_stage = (STAGE_REMEDIES if has_gpu else CPU_STAGE_REMEDIES).get(stage or "")
    more_cpu = "more CPU cores" + (f" ({stage} dominates, {best.stages_ms[stage]:.1f} ms/image)" if stage else "")
    return f"{more_cpu}, or {by_stage}" if by_stage else more_cpu


def recommend(
    results: Sequence[SettingResult], starvation: Starvation, cpu_count: int, has_gpu: bool
) -> Recommendation:
    """The smallest num_workers within 5% of the best throughput, the pin-memory choice, and whether even
    the best setting starves the model.

    With a step time, only the settings that feed the model compete when there are any: 0 workers can be
    the fastest loader yet starve the model, since nothing loads while it computes.
    """
    candidates = _per_worker_count(results, has_gpu)
    if not candidates:
        crashed = [r for r in results if not r.ok]
        why = f"{crashed[0].error}; {crashed[0].fix}" if crashed else "nothing was measured"
        return Recommendation(None, None, None, f"No setting completed: {why}.")
    verdicts = {(s.num_workers, s.pin_memory): s for s in starvation.per_setting}
    fed = [r for r in candidates if verdicts[(r.num_workers, r.pin_memory)].starved is False]
    pool = fed or candidates
    best = max(pool, key=_images_per_s)
    pick = min(
        (r for r in pool if _images_per_s(r) >= (1 - WITHIN_BEST) * _images_per_s(best)), key=lambda r: r.num_workers
    )
    pick_verdict = verdicts[(pick.num_workers, pick.pin_memory)]

    pin = pick.pin_memory if has_gpu else "off"
    setting = f"Use --num-workers {pick.num_workers} (pin_memory {pin}{'' if has_gpu else ', no GPU'})"
    if pick is best:
        first = (
            f"{setting}: the fastest setting{' that feeds the model' if fed else ''}, {pick.images_per_s:.0f} images/s."
        )
    else:
        first = (
            f"{setting}: {pick.images_per_s:.0f} images/s, within {WITHIN_BEST:.0%} of the fastest "
            f"({best.images_per_s:.0f} with {best.num_workers} workers) for less memory and start-up."
        )
    waiter = "GPU" if has_gpu and (starvation.device or "").startswith("cuda") else "model"
    step = starvation.step_time_s
    starved = None if step is None else not fed
    if step is None:
        second = "No model step time (--step-time none): whether training waits for data is not judged."
    elif starved:
        least = min(candidates, key=lambda r: _measured(verdicts[(r.num_workers, r.pin_memory)].wait_fraction))
        wait = verdicts[(least.num_workers, least.pin_memory)].wait_fraction
        second = (
            f"Even the best setting ({least.num_workers} workers) leaves the {waiter} waiting {wait:.0%} of "
            f"each step ({least.batches_per_s:.3g} batches/s for {1 / step:.3g} steps/s): "
            f"{_remedy(best, [r.num_workers for r in results], cpu_count, waiter == 'GPU')}."
        )
    else:
        second = (
            f"It delivers {pick.batches_per_s:.3g} batches/s for the model's {1 / step:.3g} steps/s: "
            f"the {waiter} waits {pick_verdict.wait_fraction:.0%} of each step."
        )
    return Recommendation(
        num_workers=pick.num_workers,
        pin_memory=pin,
        starved=starved,
        advice=f"{first}\n{second}",
        images_per_s=pick.images_per_s,
        best_num_workers=best.num_workers,
        best_images_per_s=best.images_per_s,
    )


def explain_crash(message: str, shm_bytes: int | None) -> tuple[str, str]:
    """(reason, fix) for an exception raised while a setting loaded batches.

    torch names a worker's fatal signal in words ("killed by signal: Killed") or not at all ("exited
    unexpectedly"); the measurement appends the signals it saw as "(worker signals: SIGKILL)".
    """
    fewer = "use fewer workers or a smaller --batch-size"
    worded = re.search(r"killed by signal: ([\w ]+?)\.", message)
    if any(s in message for s in ("Bus error", "SIGBUS", "shared memory")) or "shm" in message.lower():
        size = f" (/dev/shm holds {shm_bytes / 2**20:.0f} MiB)" if shm_bytes else ""
        return (
            f"a worker ran out of shared memory{size}",
            f"enlarge /dev/shm (docker run --shm-size=8g or --ipc=host), or {fewer}",
        )
    if "SIGKILL" in message or (worded and worded.group(1) == "Killed"):
        return (
            "a worker was killed (SIGKILL), usually by the out-of-memory killer",
            f"{fewer}, or add host memory; `dmesg | grep -i oom` confirms",
        )
    signals = re.search(r"\(worker signals: ([^)]+)\)", message)
    if named := worded or signals:
        name = named.group(1)
        return (f"a worker died of signal {name}", "rerun with --num-workers 0 to see the failure in the main process")
    if "exited unexpectedly" in message:
        return (
            "a worker exited unexpectedly (killed by the OS or a native crash)",
            f"{fewer}; check `dmesg` for the OOM killer, or rerun with --num-workers 0",
        )
    if re.search(r"Caught \w+ in DataLoader worker process \d+", message):
        lines = [line for line in message.strip().splitlines() if line.strip()]
        return (
            f"the dataset raised {lines[-1].strip()} in a worker",
            "rerun with --num-workers 0 for the full traceback, and fix the dataset",
        )
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return first_line, "rerun with --num-workers 0 to see whether the dataset itself fails"
