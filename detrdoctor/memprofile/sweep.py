"""Running the points: the batch sizes × AMP modes, measured (each in a fresh process unless asked
otherwise) and/or estimated, the --find-max searches, and the snapshot; with a progress bar."""

from __future__ import annotations

from rich.progress import Progress

from detrdoctor.memprofile.estimate import Estimator
from detrdoctor.memprofile.plan import Plan
from detrdoctor.memprofile.request import PointRequest, PointResult, request_for
from detrdoctor.memprofile.search import Search, find_max
from detrdoctor.memprofile.shapes import Shape
from detrdoctor.memprofile.summary import fits


class Sweep:
    """Runs points for a plan at a shape and keeps every result (sweep and search alike)."""

    def __init__(self, plan: Plan, shape: Shape, progress: Progress):
        self.plan, self.shape, self.progress = plan, shape, progress
        self.results: list[PointResult] = []
        self._estimator = Estimator(plan.cfg, plan.build) if plan.estimate else None
        self._task = progress.add_task("memprofile", total=0)

    def run(self, snapshot_path: str | None = None) -> tuple[dict[str, Search], PointResult | None]:
        """The sweep of each mode, the searches and the snapshot on the first (the verdicts' mode).
        Measurements come before estimates, so that the estimator never shares the GPU with one."""
        p = self.plan
        modes = ["measured"] * (p.device is not None) + ["estimated"] * p.estimate
        self.progress.update(self._task, total=len(modes) * len(p.amp_modes) * len(p.batch_sizes))
        searches: dict[str, Search] = {}
        snapshot = None
        for mode in modes:
            for amp in p.amp_modes:
                for b in p.batch_sizes:
                    self.point(mode, amp, b, "sweep")
            if mode != modes[0]:
                continue
            if p.find_max:
                searches = {amp: self._search(mode, amp) for amp in p.amp_modes}
            if snapshot_path is not None:
                snapshot = self._snapshot(snapshot_path)
        return searches, snapshot

    def _search(self, mode: str, amp: str) -> Search:
        usable = self.plan.usable_bytes
        known = {r.batch_size: bool(fits(r, usable)) for r in self.results if r.mode == mode and r.amp == amp}
        return find_max(lambda b: bool(fits(self.point(mode, amp, b, "search"), usable)), known)

    def point(self, mode: str, amp: str, batch_size: int, source: str) -> PointResult:
        """One point, measured or estimated; its result is kept."""
        if source == "search":
            self.progress.update(self._task, total=(self.progress.tasks[self._task].total or 0) + 1)
        verb = "estimating" if mode == "estimated" else "measuring"
        self.progress.update(self._task, description=f"{verb} batch {batch_size}, {amp}")
        if mode == "estimated":
            assert self._estimator is not None  # built for a plan with estimates
            result = self._estimator.estimate(batch_size, amp, self.shape.hw)
        else:
            result = self._measure(self._request(amp, batch_size))
        result.source = source
        self.results.append(result)
        self.progress.advance(self._task)
        return result

    def _snapshot(self, path: str) -> PointResult | None:
        """Measure the largest fitting point again, recording its allocations for pytorch.org/memory_viz."""
        fitting = [r for r in self.results if r.mode == "measured" and fits(r, self.plan.usable_bytes)]
        if not fitting:
            return None
        largest = max(fitting, key=lambda r: (r.batch_size, r.peak_bytes))
        self.progress.update(
            self._task,
            total=(self.progress.tasks[self._task].total or 0) + 1,
            description=f"snapshot of batch {largest.batch_size}, {largest.amp}",
        )
        request = self._request(largest.amp, largest.batch_size)
        request.snapshot_path = path
        result = self._measure(request)
        self.progress.advance(self._task)
        return result

    def _request(self, amp: str, batch_size: int) -> PointRequest:
        return request_for(
            self.plan.cfg,
            batch_size=batch_size,
            amp=amp,
            shape=self.shape.hw,
            device=self.plan.device,
            build=self.plan.build,
        )

    def _measure(self, request: PointRequest) -> PointResult:
        if self.plan.in_process:
            from detrdoctor.memprofile.measure import measure_point

            return measure_point(request)
        from detrdoctor.memprofile.isolation import run_isolated

        return run_isolated(request)
