"""The best evaluation so far: what `best.pth` holds, and the patience count behind early stopping."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypedDict


class BestRecord(TypedDict):
    """`best` in best.pth and in eval records: the metric, its best value and the step it was reached at."""

    metric: str
    value: float
    step: int


@dataclass
class BestTracker:
    """Follows one higher-is-better metric of the eval records.

    Any evaluation above the best so far is a new best (best.pth follows the true maximum). Early stopping
    counts `stale` evaluations since the last one that beat the best of its time by more than `min_delta`:
    small gains still move best.pth, but a run of them is a plateau.
    """

    metric: str
    value: float | None = None
    step: int = 0
    stale: int = 0  # evaluations since the last gain of more than min_delta

    def update(self, value: float | None, step: int, min_delta: float) -> bool:
        """Judge one evaluation; True when it is a new best. An undefined value (None) counts as no gain."""
        if value is None:
            self.stale += 1
            return False
        gained = self.value is None or value - self.value > min_delta
        improved = self.value is None or value > self.value
        self.stale = 0 if gained else self.stale + 1
        if improved:
            self.value, self.step = value, step
        return improved

    def record(self) -> BestRecord | None:
        return None if self.value is None else BestRecord(metric=self.metric, value=self.value, step=self.step)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric:  # a run resumed with another best_metric starts afresh
            self.value, self.step, self.stale = state["value"], state["step"], state["stale"]
