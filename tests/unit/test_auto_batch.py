"""`--batch-size auto`'s selection with an injected memory budget, the best-evaluation tracker and the new keys."""

from __future__ import annotations

import pytest

from detr.config import device_batch_size, optimizer_batch_size, validate
from detr.engine.best import BestTracker
from detr.errors import ConfigError
from detrdoctor.memprofile.auto import choose_batch_size, run_shape
from detrdoctor.memprofile.estimate import Estimator
from detrdoctor.memprofile.gpus import GPU
from detrdoctor.memprofile.summary import used_bytes


def test_auto_picks_the_largest_batch_the_estimate_fits_into_the_budget(tiny_cfg):
    shape = run_shape(tiny_cfg)
    estimator = Estimator(tiny_cfg)

    def used(b: int) -> int:
        return used_bytes(estimator.estimate(b, "off", shape))

    four, six = used(4), used(6)  # the allocator model reserves in steps: these two differ
    assert four < six
    budget = GPU("test budget", (four + six) // 2, bf16=True)  # batch 4 fits, 6 does not
    choice = choose_batch_size(tiny_cfg, budget, margin=0.0, limit=8)
    assert choice.source == "estimated" and choice.margin == 0.0 and choice.shape == shape
    assert 4 <= choice.batch_size < 6
    assert used(choice.batch_size) <= budget.memory_bytes < used(choice.batch_size + 1)  # the largest that fits
    assert choice.used_bytes == used(choice.batch_size)
    assert choice.trials[:4] == [1, 2, 4, 8]  # doubling, then bisection
    capped = choose_batch_size(tiny_cfg, GPU("roomy", 64 << 30, bf16=True), limit=2)
    assert capped.batch_size == 2 and capped.limit == 2  # never more than the optimizer's batch or the data


def test_auto_says_when_not_even_one_image_fits(tiny_cfg):
    with pytest.raises(ConfigError, match="not even one image fits"):
        choose_batch_size(tiny_cfg, GPU("tiny", 1 << 20, bf16=True), limit=4)


def test_the_shape_covers_training_and_evaluation(tiny_cfg):
    tiny_cfg.data.val_size, tiny_cfg.data.max_size = 120, 200  # evaluation images larger than training's
    height, width = run_shape(tiny_cfg)
    assert min(height, width) >= 120


def test_best_tracker_follows_the_maximum_and_counts_evaluations_without_a_gain():
    best = BestTracker("AP")
    assert best.update(0.10, 10, min_delta=0.01) and best.stale == 0
    assert best.update(0.105, 20, min_delta=0.01)  # a new best (best.pth moves) ...
    assert best.stale == 1  # ... but not a gain of more than min_delta
    assert not best.update(0.09, 30, min_delta=0.01) and best.stale == 2
    assert not best.update(None, 40, min_delta=0.01) and best.stale == 3  # undefined: no gain
    assert best.update(0.2, 50, min_delta=0.01) and best.stale == 0
    assert best.record() == {"metric": "AP", "value": 0.2, "step": 50}
    resumed = BestTracker("AP")
    resumed.load_state_dict(best.state_dict())
    assert resumed == best
    other = BestTracker("AP50")
    other.load_state_dict(best.state_dict())  # another metric starts afresh
    assert other.record() is None


def test_batch_keys_are_checked(tiny_cfg):
    t = tiny_cfg.train
    t.batch_size, t.effective_batch = 4, 8
    validate(tiny_cfg)
    assert (device_batch_size(t), optimizer_batch_size(t)) == (4, 8)
    t.effective_batch = 3
    with pytest.raises(ConfigError, match="smaller than the batch size"):
        validate(tiny_cfg)
    t.batch_size, t.effective_batch = "auto", 0
    validate(tiny_cfg)
    with pytest.raises(ConfigError, match="chosen by `detrdoctor train`"):
        device_batch_size(t)
    t.batch_size, t.best_metric = 2, "loss"
    with pytest.raises(ConfigError, match="best_metric"):
        validate(tiny_cfg)
