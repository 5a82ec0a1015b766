"""The watchdog's robust statistics and early-warning rules on hand-made sequences (no model, no torch)."""

from __future__ import annotations

import math
from collections import deque

import pytest

from detr.config import WatchdogConfig
from detr.model import model_part
from detrdoctor.watchdog.groups import forward_rank, owner_call
from detrdoctor.watchdog.signals import (
    EVENT_KINDS,
    EarlyWarning,
    StepStats,
    amp_skip_rate,
    grad_norm_spike,
    growth,
    loss_spike,
    moved_most,
    overflow_forecast,
    overflow_risk,
)
from detrdoctor.watchdog.stats import (
    RollingWindow,
    median,
    range_excess,
    robust_z,
    slope,
    steps_to_limit,
    sustained_growth,
)


def window(values, size=100) -> RollingWindow:
    return RollingWindow(size, values)


def test_median_and_mad_ignore_a_single_outlier():
    w = window([1.0, 2.0, 3.0, 4.0, 1000.0])
    assert w.median() == 3.0
    assert w.mad() == 1.0  # deviations 2, 1, 0, 1, 997
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_window_keeps_the_last_values_and_drops_non_finite_ones():
    w = RollingWindow(3)
    for v in (1.0, math.nan, 2.0, math.inf, 3.0, 4.0):
        w.append(v)
    assert list(w.values) == [2.0, 3.0, 4.0]
    assert w.last(2) == [3.0, 4.0]


def test_robust_z_floors_the_spread_of_a_flat_history():
    flat = window([1.0] * 20)
    assert robust_z(1.5, flat, min_sigma=0.25) == pytest.approx(2.0)
    noisy = window([0.0, 1.0] * 10)  # median 0.5, MAD 0.5
    assert robust_z(3.0, noisy, min_sigma=0.01) == pytest.approx(2.5 / (1.4826 * 0.5))


def test_range_excess_in_units_of_the_window_range():
    w = window([10.0, 12.0, 11.0, 14.0])
    assert range_excess(18.0, w, min_range=0.1) == pytest.approx(1.0)
    assert range_excess(13.0, w, min_range=0.1) < 0


def test_slope_and_sustained_growth():
    assert slope([0.0, 1.0, 2.0, 3.0]) == pytest.approx(1.0)
    factor, rising = sustained_growth([math.log(2.0**i) for i in range(9)])
    assert factor == pytest.approx(2.0) and rising == 1.0
    # One jump at the end is no trend: the median of the pairwise slopes ignores it.
    factor, rising = sustained_growth([0.0] * 8 + [5.0])
    assert factor == 1.0 and rising == pytest.approx(1 / 8)


def test_grad_norm_spike_fires_on_a_jump_not_on_noise():
    cfg = WatchdogConfig()
    history = window([math.log(v) for v in [10, 12, 9, 11, 10, 13, 8, 10, 11, 12] * 3])
    assert grad_norm_spike(math.log(14.0), history, cfg) is None
    signal = grad_norm_spike(math.log(1000.0), history, cfg)
    assert signal is not None and signal.actionable and signal.value > cfg.spike_z
    assert signal.threshold == cfg.spike_z and signal.kind == "grad_norm_spike"


def test_growth_needs_a_sustained_trend():
    cfg = WatchdogConfig(growth_steps=8, growth_factor=1.25, growth_rising=0.75)
    steady = [math.log(10.0 * 1.5**i) for i in range(9)]
    signal = growth("grad_norm_growth", "grad_norm", steady, cfg.growth_factor, cfg)
    assert signal is not None and signal.value == pytest.approx(1.5) and not signal.actionable
    zigzag = [math.log(10.0 * (3.0 if i % 2 else 1.0)) for i in range(9)]
    assert growth("grad_norm_growth", "grad_norm", zigzag, cfg.growth_factor, cfg) is None
    assert growth("grad_norm_growth", "grad_norm", steady[:5], cfg.growth_factor, cfg) is None  # too short to judge
    assert growth("activation_growth", "backbone_output_max", steady, 1.6, cfg) is None


def test_loss_spike_against_the_running_range():
    cfg = WatchdogConfig(loss_spike=1.0)
    history = window([20.0, 18.0, 19.0, 17.0, 18.5, 17.5] * 5)  # range 17–20
    assert loss_spike(21.0, history, cfg) is None
    signal = loss_spike(24.0, history, cfg)
    assert signal is not None and signal.value == pytest.approx(4 / 3)
    # A flat loss curve counts as at least 5 % of its median wide.
    assert loss_spike(10.3, window([10.0] * 30), cfg) is None


def test_amp_skip_rate_judges_a_full_window():
    cfg = WatchdogConfig(amp_skip_rate=0.2)
    assert amp_skip_rate(deque([True] * 5, maxlen=10), cfg) is None  # still filling
    assert amp_skip_rate(deque([True] + [False] * 9, maxlen=10), cfg) is None
    signal = amp_skip_rate(deque([True, False] * 5, maxlen=10), cfg)
    assert signal is not None and signal.value == 0.5


def test_overflow_risk_relative_to_the_dtype_limit():
    cfg = WatchdogConfig(overflow_ratio=0.1)
    assert overflow_risk(1000.0 / 65504.0, "decoder output", 65504.0, cfg) is None
    assert overflow_risk(30000.0 / 65504.0, "decoder output", 65504.0, cfg).value == pytest.approx(30000 / 65504)
    assert overflow_risk(math.nan, "decoder output", 65504.0, cfg) is None


def test_moved_most_names_the_group_that_rose_over_its_own_median():
    history = {"encoder": window([math.log(5.0)] * 10), "decoder": window([math.log(1.0)] * 10)}
    group, factor = moved_most({"encoder": 10.0, "decoder": 8.0}, history)
    assert group == "decoder" and factor == pytest.approx(8.0)


def stats(step: int, norm: float, loss: float = 10.0, **activations: float) -> StepStats:
    return StepStats(step, loss, {}, norm, {"encoder": norm / 2, "decoder": norm / 2}, dict(activations))


def test_early_warning_waits_for_warmup_then_catches_a_spike():
    cfg = WatchdogConfig(warmup_steps=10)
    rules = EarlyWarning(cfg, ["encoder", "decoder"])
    assert rules.observe(stats(1, 1000.0), 3e38) == []  # DETR's first steps are wild: nothing judged yet
    for step in range(2, 30):
        assert rules.observe(stats(step, 10.0 + step % 3), 3e38) == []
    signals = rules.observe(stats(30, 5000.0), 3e38)
    assert [s.kind for s in signals] == ["grad_norm_spike"] and signals[0].module in ("encoder", "decoder")


def test_early_warning_sees_activations_grow_toward_overflow():
    cfg = WatchdogConfig(warmup_steps=5)
    rules = EarlyWarning(cfg, ["backbone"])
    kinds = []
    for step in range(1, 40):
        stat = StepStats(step, 10.0, {}, 10.0, {"backbone": 10.0}, {"backbone": 2.0**step})
        kinds += [(s.kind, s.module) for s in rules.observe(stat, 65504.0)]
    assert ("activation_growth", "backbone") in kinds and ("overflow_risk", "backbone") in kinds


def test_early_warning_state_round_trips():
    cfg = WatchdogConfig()
    rules = EarlyWarning(cfg, ["encoder", "decoder"])
    for step in range(1, 20):
        rules.observe(stats(step, 10.0 + step, backbone=float(step)), 3e38)
    copy = EarlyWarning(cfg, ["encoder", "decoder"])
    copy.load_state_dict(rules.state_dict())
    assert copy.state_dict() == rules.state_dict()


def test_groups_of_parameter_names():
    names = [
        "transformer.encoder.layers.0.linear1.weight",
        "transformer.decoder.layers.0.linear1.weight",
        "class_embed.weight",
        "bbox_embed.layers.0.weight",
        "query_embed.weight",
        "input_proj.weight",
        "backbone.0.body.layer2.0.conv1.weight",
    ]
    assert [model_part(n) for n in names] == [
        "encoder",
        "decoder",
        "class_head",
        "box_head",
        "queries",
        "input_proj",
        "backbone",
    ]
    assert model_part("module.backbone.0.body.conv1.weight") == "backbone"
    assert model_part("something.else") == "other"


def test_forward_rank_follows_the_first_calls_not_the_registration_order():
    # A post-norm layer registers linear1, linear2, norm1, norm2 but runs norm1 before linear1.
    first_call = {
        "": 0,
        "layer": 1,
        "layer.attn": 2,
        "layer.norm1": 3,
        "layer.linear1": 4,
        "layer.linear2": 5,
        "layer.norm2": 6,
    }
    names = [
        "layer.attn.in_proj_weight",
        "layer.attn.out_proj.weight",
        "layer.linear1.weight",
        "layer.linear2.weight",
        "layer.norm1.weight",
        "layer.norm2.weight",
        "embed.weight",
    ]
    assert owner_call("layer.attn.out_proj.weight", first_call) == 2  # out_proj is never called itself
    assert owner_call("embed.weight", first_call) == 0
    rank = forward_rank(names, first_call)
    assert [names[i] for i in sorted(range(len(names)), key=rank.__getitem__)] == [
        "embed.weight",
        "layer.attn.in_proj_weight",
        "layer.attn.out_proj.weight",
        "layer.norm1.weight",
        "layer.linear1.weight",
        "layer.linear2.weight",
        "layer.norm2.weight",
    ]


def test_overflow_forecast_projects_the_median_growth_to_the_limit():
    cfg = WatchdogConfig(forecast_steps=3, forecast_horizon=20, activation_growth_factor=1.5)
    limit = math.log(1e19)
    # ×1e10 in the first step, then ×10 per step: 1e-1 → the limit at 1e19 is ~5 steps away.
    diverging = [math.log(v) for v in (1.0, 1e10, 1e12, 1e13, 1e14)]
    factor, steps = steps_to_limit(diverging[-4:], limit)
    assert factor == pytest.approx(10.0) and steps == pytest.approx(5.0)
    signal = overflow_forecast("backbone", diverging, limit, cfg)
    assert signal.kind == "overflow_forecast" and signal.module == "backbone" and signal.value == pytest.approx(5.0)
    assert "backbone activations ×10 per step: non-finite in ~5 steps at this rate" in signal.message
    # One wild first step and then a flat curve is no trend; nor is steady growth far from the limit.
    assert overflow_forecast("backbone", [math.log(v) for v in (2.0, 500.0, 650.0, 620.0)], limit, cfg) is None
    assert overflow_forecast("backbone", [math.log(2.0**i) for i in range(4)], limit, cfg) is None
    assert overflow_forecast("backbone", diverging[:3], limit, cfg) is None  # three values: too few to judge


def test_overflow_forecast_speaks_before_the_warmup_ends():
    rules = EarlyWarning(WatchdogConfig(warmup_steps=10), ["backbone", "input_proj"])
    kinds = []
    for step, value in enumerate((6.0, 1e11, 1e13, 1e14, 1e15), 1):
        stat = StepStats(step, 10.0, {}, 10.0, {"backbone": 10.0}, {"backbone": value, "input_proj": value})
        kinds += [(step, s.kind, s.module) for s in rules.observe(stat, 1.8e19)]
    assert kinds[0] == (4, "overflow_forecast", "backbone")  # the first group in forward order: where it starts


def test_event_kinds_are_the_contract():
    # Displays, plots and summaries count and mark these names: extend the list, never rename one.
    assert EVENT_KINDS == (
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
