"""The early-warning rules: each looks at one step's numbers against the rolling history of the run.

Everything here is plain Python on host floats, so the rules are unit-testable on hand-made sequences.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from detr.config import WatchdogConfig
from detr.model import model_part
from detrdoctor.watchdog.stats import RollingWindow, range_excess, robust_z, steps_to_limit, sustained_growth

# A loss window whose range is below this fraction of its median counts as this wide: a flat loss
# curve must not turn every small bump into a "spike".
MIN_LOSS_RANGE_FRACTION = 0.05
# Every event kind the watchdog writes (the displays and summaries count and mark these).
EVENT_KINDS = (
    "grad_norm_spike",
    "grad_norm_growth",
    "loss_spike",
    "amp_skip_rate",
    "overflow_risk",
    "activation_growth",
    "overflow_forecast",
    "nonfinite_grad",
    "nonfinite_loss",
    "nonfinite_op",
    "step_skipped",
    "rollback",
    "stopped",
    "mostly_skipped",
)


def is_watchdog_warning(severity: str | None, kind: str | None, signal: str | None) -> bool:
    """A warning or error the gradient displays mark: one of the watchdog's kinds, or any event naming a signal."""
    return severity in ("warning", "error") and (kind in EVENT_KINDS or bool(signal))


@dataclass
class StepStats:
    """One step's host-side numbers, read from the device in a single transfer."""

    step: int
    loss: float
    components: dict[str, float]  # loss_ce, loss_bbox, loss_giou
    grad_norm: float  # total, before clipping
    group_norms: dict[str, float]  # module group → gradient norm
    activations: dict[str, float] = field(default_factory=dict)  # module group → max |output|, every step
    sampled: dict[str, float] = field(default_factory=dict)  # module name → max |output| (`….logits` for attention)
    amp_skipped: bool = False  # GradScaler found inf/NaN gradients and drops the step itself
    loss_scale: float | None = None
    culprit: str | None = None  # the non-finite gradient latest in forward order: where the NaN/inf entered
    nonfinite_parameters: int = 0  # parameters with a non-finite gradient


@dataclass
class Signal:
    """One rule that fired: becomes an event, and for `actionable` ones the `--on-anomaly` action."""

    kind: str  # event kind, e.g. grad_norm_spike
    signal: str  # the statistic compared with the threshold
    value: float | None  # None: nothing measured (the detect_anomaly re-run)
    threshold: float | None
    message: str
    module: str | None = None  # the module group that moved most
    actionable: bool = False  # a single bad step (spike) that skipping can drop, not a trend


def log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def moved_most(now: dict[str, float], history: dict[str, RollingWindow]) -> tuple[str | None, float]:
    """The module group whose gradient norm rose most over its own recent median, and by what factor."""
    best, best_rise = None, -math.inf
    for group, value in now.items():
        window = history.get(group)
        if not window or value <= 0 or not math.isfinite(value):
            continue
        rise = math.log(value) - window.median()
        if rise > best_rise:
            best, best_rise = group, rise
    return best, (math.exp(best_rise) if best is not None else math.nan)


def grad_norm_spike(log_norm: float, window: RollingWindow, cfg: WatchdogConfig) -> Signal | None:
    """The log gradient norm far above its recent median, in robust standard deviations."""
    z = robust_z(log_norm, window, cfg.spike_min_sigma)
    if z < cfg.spike_z:
        return None
    return Signal(
        "grad_norm_spike",
        "grad_norm_robust_z",
        z,
        cfg.spike_z,
        f"gradient norm {math.exp(log_norm):.3g} is {z:.1f} robust σ above the median "
        f"{math.exp(window.median()):.3g} of the last {len(window)} steps",
        actionable=True,
    )


def growth(kind: str, what: str, log_values: list[float], threshold: float, cfg: WatchdogConfig) -> Signal | None:
    """Sustained exponential growth, at least ×`threshold` per step, over the last `growth_steps` steps."""
    if len(log_values) < cfg.growth_steps + 1:
        return None
    factor, rising = sustained_growth(log_values[-(cfg.growth_steps + 1) :])
    if factor < threshold or rising < cfg.growth_rising:
        return None
    total = math.exp(log_values[-1] - log_values[-(cfg.growth_steps + 1)])
    return Signal(
        kind,
        f"{what}_growth_per_step",
        factor,
        threshold,
        f"{what.replace('_', ' ')} grew ×{factor:.2f} per step over the last {cfg.growth_steps} steps "
        f"(×{total:.3g} in all, {rising:.0%} of steps rising)",
    )


def loss_spike(loss: float, window: RollingWindow, cfg: WatchdogConfig) -> Signal | None:
    """The loss above the top of its recent range by more than `loss_spike` ranges."""
    min_range = MIN_LOSS_RANGE_FRACTION * abs(window.median())
    excess = range_excess(loss, window, min_range)
    if excess < cfg.loss_spike:
        return None
    top, bottom = max(window.values), min(window.values)
    return Signal(
        "loss_spike",
        "loss_range_excess",
        excess,
        cfg.loss_spike,
        f"loss {loss:.4g} is {excess:.1f}× the recent range above its top "
        f"(range {bottom:.4g}–{top:.4g} over {len(window)} steps)",
        actionable=True,
    )


def amp_skip_rate(skips: deque[bool], cfg: WatchdogConfig) -> Signal | None:
    """GradScaler dropping more than `amp_skip_rate` of the steps in a full window."""
    if skips.maxlen is None or len(skips) < skips.maxlen:
        return None
    rate = sum(skips) / len(skips)
    if rate < cfg.amp_skip_rate:
        return None
    return Signal(
        "amp_skip_rate",
        "amp_skip_rate",
        rate,
        cfg.amp_skip_rate,
        f"GradScaler skipped {rate:.0%} of the last {len(skips)} steps (inf/NaN fp16 gradients): "
        "the loss scale keeps collapsing",
    )


def overflow_risk(ratio: float, where: str, limit: float, cfg: WatchdogConfig) -> Signal | None:
    """An activation or attention logit within a factor of the overflow limit (see GradientWatchdog)."""
    if not ratio >= cfg.overflow_ratio:  # NaN compares false: a NaN activation is reported as non-finite elsewhere
        return None
    return Signal(
        "overflow_risk",
        "activation_max_fraction",
        ratio,
        cfg.overflow_ratio,
        f"{where} reached {ratio * limit:.3g}; the overflow limit is {limit:.3g}",
    )


def overflow_forecast(group: str, log_values: list[float], log_limit: float, cfg: WatchdogConfig) -> Signal | None:
    """A group's largest output growing fast enough to reach the overflow limit within `forecast_horizon` steps.

    Judged over the last `forecast_steps` steps only, and from a run's first steps on: a backbone at a far
    too high lr grows ×1e10 in its first step and overflows a few steps later, before the longer trends of
    `growth` can speak.
    """
    if len(log_values) < cfg.forecast_steps + 1:
        return None
    factor, steps = steps_to_limit(log_values[-(cfg.forecast_steps + 1) :], log_limit)
    if factor < cfg.activation_growth_factor or steps > cfg.forecast_horizon:
        return None
    return Signal(
        "overflow_forecast",
        "steps_to_overflow",
        steps,
        cfg.forecast_horizon,
        f"{group} activations ×{factor:.3g} per step: non-finite in ~{max(1, math.ceil(steps))} steps at "
        f"this rate (largest output {math.exp(log_values[-1]):.3g}, overflow at {math.exp(log_limit):.3g})",
        module=group,
    )


class EarlyWarning:
    """Rolling histories of the run and the rules over them; `observe` checks a step, then records it."""

    def __init__(self, cfg: WatchdogConfig, groups: list[str]):
        self.cfg = cfg
        self.log_norm = RollingWindow(cfg.window)
        self.loss = RollingWindow(cfg.window)
        self.group_log_norm = {g: RollingWindow(cfg.window) for g in groups}
        self.activation_log = {g: RollingWindow(max(cfg.growth_steps, cfg.forecast_steps) + 1) for g in groups}
        self.amp_skips: deque[bool] = deque(maxlen=cfg.window)
        self.observed = 0  # steps recorded

    def observe(self, stats: StepStats, overflow_limit: float) -> list[Signal]:
        """The signals of a step with a finite loss; its gradients are finite too unless GradScaler skips it."""
        self.amp_skips.append(stats.amp_skipped)
        signals = self.check(stats, overflow_limit) if self.observed >= self.cfg.warmup_steps else []
        signals += self.forecast_signals(stats, overflow_limit)
        self.record(stats)
        return signals

    def check(self, stats: StepStats, overflow_limit: float) -> list[Signal]:
        found = [] if stats.amp_skipped else self.gradient_signals(stats)
        found += self.loss_signals(stats)
        found += self.activation_signals(stats, overflow_limit)
        signal = amp_skip_rate(self.amp_skips, self.cfg)
        return found + ([signal] if signal else [])

    def gradient_signals(self, stats: StepStats) -> list[Signal]:
        log_norm = log(stats.grad_norm)
        found = [
            s
            for s in (
                grad_norm_spike(log_norm, self.log_norm, self.cfg),
                growth(
                    "grad_norm_growth",
                    "grad_norm",
                    self.log_norm.last(self.cfg.growth_steps) + [log_norm],
                    self.cfg.growth_factor,
                    self.cfg,
                ),
            )
            if s is not None
        ]
        for signal in found:
            signal.module, factor = moved_most(stats.group_norms, self.group_log_norm)
            signal.message += f"; {signal.module} moved most (×{factor:.3g} its median)"
        return found

    def loss_signals(self, stats: StepStats) -> list[Signal]:
        signal = loss_spike(stats.loss, self.loss, self.cfg) if len(self.loss) else None
        if signal is None:
            return []
        signal.module, _ = moved_most(stats.group_norms, self.group_log_norm)
        signal.message += f"; gradient moved most in {signal.module}"
        return [signal]

    def activation_signals(self, stats: StepStats, limit: float) -> list[Signal]:
        """Overflow risk of the largest activation, and the fastest sustained growth of a group's outputs."""
        found = []
        sites = {f"{g} output": v for g, v in stats.activations.items()} | stats.sampled
        finite = {where: v for where, v in sites.items() if math.isfinite(v)}
        if finite:
            where = max(finite, key=finite.__getitem__)
            signal = overflow_risk(finite[where] / limit, where, limit, self.cfg)
            if signal is not None:
                signal.module = model_part(where) if where in stats.sampled else where.removesuffix(" output")
                found.append(signal)
        fastest, fastest_factor = None, -math.inf
        for group, history in self.activation_log.items():
            value = stats.activations.get(group)
            if value is None:
                continue
            recent = history.last(self.cfg.growth_steps) + [log(value)]
            signal = growth(
                "activation_growth", f"{group}_output_max", recent, self.cfg.activation_growth_factor, self.cfg
            )
            if signal is not None and signal.value is not None and signal.value > fastest_factor:
                fastest, fastest_factor, signal.module = signal, signal.value, group
        return found + ([fastest] if fastest else [])

    def forecast_signals(self, stats: StepStats, limit: float) -> list[Signal]:
        """The first group in forward order projected to overflow within the horizon: where the growth starts
        (no warm-up: see overflow_forecast)."""
        for group, history in self.activation_log.items():
            value = stats.activations.get(group)
            if value is not None and 0 < value < math.inf:
                signal = overflow_forecast(
                    group, history.last(self.cfg.forecast_steps) + [log(value)], log(limit), self.cfg
                )
                if signal is not None:
                    return [signal]
        return []

    def record(self, stats: StepStats) -> None:
        """Append the step to the histories (non-finite values are dropped by the windows)."""
        self.log_norm.append(log(stats.grad_norm))
        self.loss.append(stats.loss)
        for group, value in stats.group_norms.items():
            self.group_log_norm[group].append(log(value))
        for group, history in self.activation_log.items():
            activation = stats.activations.get(group)
            if activation is not None:
                history.append(log(activation))
        self.observed += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_norm": list(self.log_norm.values),
            "loss": list(self.loss.values),
            "group_log_norm": {g: list(w.values) for g, w in self.group_log_norm.items()},
            "activation_log": {g: list(w.values) for g, w in self.activation_log.items()},
            "amp_skips": list(self.amp_skips),
            "observed": self.observed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_norm.values.extend(state["log_norm"])
        self.loss.values.extend(state["loss"])
        for group, values in state["group_log_norm"].items():
            if group in self.group_log_norm:
                self.group_log_norm[group].values.extend(values)
        for group, values in state["activation_log"].items():
            if group in self.activation_log:
                self.activation_log[group].values.extend(values)
        self.amp_skips.extend(state["amp_skips"])
        self.observed = state["observed"]
