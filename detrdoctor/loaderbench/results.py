"""The plain records loader-bench collects, judges and renders (their field names are the JSON contract)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SettingResult:
    """One DataLoader setting's measurement; on a crash only the identity, `error` and `fix` are set.

    Rates are medians over windows of the timed batches; `images_per_s_spread` is half the range of the
    window rates. `cpu_percent` counts the main process and its workers (100 = one core busy).
    `peak_rss_bytes` sums the peak resident memory (VmHWM) of the main process and of every worker, so
    copy-on-write pages shared after fork count once per process: an upper bound. `stages_ms` is the
    mean cost per image of each stage inside the workers (None: that stage could not be separated).
    """

    num_workers: int
    pin_memory: str  # "on" | "off"
    status: str = "ok"  # "ok" | "crashed"
    images_per_s: float | None = None
    batches_per_s: float | None = None
    images_per_s_spread: float | None = None
    images_per_s_windows: list[float] = field(default_factory=list)
    first_batch_s: float | None = None
    cpu_percent: float | None = None
    peak_rss_bytes: int | None = None
    peak_rss_main_bytes: int | None = None
    peak_rss_workers_bytes: int | None = None
    pss_bytes: int | None = None  # proportional set size of main + workers at the end: shared pages split, not repeated
    stages_ms: dict[str, float | None] = field(default_factory=dict)
    h2d_copy_ms: float | None = None  # per batch, only with a GPU: pinned + non_blocking when pin_memory is on
    timed_batches: int = 0  # fewer than --batches when the setting's time budget ran out
    images: int = 0  # images in the timed batches
    corrupt_images: int = 0  # unreadable files replaced by another sample, over every batch loaded
    error: str | None = None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.batches_per_s)


@dataclass
class SettingStarvation:
    """Whether the model would wait for this setting's batches, and for what share of each step."""

    num_workers: int
    pin_memory: str
    loader_batch_s: float | None  # seconds per batch from the loader (None: the setting crashed)
    wait_s: float | None  # seconds per step the model waits for data
    wait_fraction: float | None  # wait_s / the step's period
    starved: bool | None


@dataclass
class Starvation:
    step_time_s: float | None  # seconds per training step (None: not measured, no verdict)
    step_time_source: str  # "measured" | "given" | "none"
    device: str | None
    per_setting: list[SettingStarvation] = field(default_factory=list)


@dataclass
class Recommendation:
    """The setting to use; `starved` is whether even the fastest setting starves the model (None: unknown)."""

    num_workers: int | None
    pin_memory: str | None
    starved: bool | None
    advice: str
    images_per_s: float | None = None
    best_num_workers: int | None = None
    best_images_per_s: float | None = None
