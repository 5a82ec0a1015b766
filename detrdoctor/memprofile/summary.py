"""Judging the sweep: what fits, the recommended batch sizes, what AMP saves and how good the estimates
are. Plain data, rendered by render.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from detrdoctor.memprofile.estimate import CUDA_CONTEXT
from detrdoctor.memprofile.gpus import GPU, KNOWN_GPUS
from detrdoctor.memprofile.request import PointResult
from detrdoctor.memprofile.search import Search
from detrdoctor.memprofile.shapes import Shape

# Without a target GPU, fits are shown against these (one per common memory size).
LADDER = ["T4", "RTX4090", "V100-32GB", "A100-40GB", "L40S", "A100-80GB", "H200"]
ESTIMATE_TARGET = 0.10  # the estimator's accuracy goal, as a fraction of the measured peak


def used_bytes(result: PointResult) -> int | None:
    """Device memory a point needs: the device total when known, else (on CUDA) reserved plus a context."""
    if result.device_bytes is not None or result.device == "cpu":
        return result.device_bytes
    base = result.reserved_bytes if result.reserved_bytes is not None else result.peak_bytes
    return None if base is None else base + CUDA_CONTEXT


def fits(result: PointResult, usable: int | None) -> bool | None:
    """Whether the point runs within `usable` bytes (None: no device to judge against)."""
    if usable is None or result.mode == "measured" and result.device == "cpu":
        return None
    if result.status != "ok":
        return False
    used = used_bytes(result)
    return used is not None and used <= usable


@dataclass
class Summary:
    profile: str
    shape: Shape
    device: dict[str, Any]
    target: GPU | None
    safety_margin: float
    results: list[PointResult]
    amp_modes: list[str]
    searches: dict[str, Search] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    snapshot_path: str | None = None

    @property
    def usable_bytes(self) -> int | None:
        return self.target.usable_bytes(self.safety_margin) if self.target else None

    @property
    def primary_mode(self) -> str:
        """The figures the verdicts rest on: measured when something was measured."""
        return "measured" if any(r.mode == "measured" for r in self.results) else "estimated"

    def primary(self, amp: str | None = None) -> list[PointResult]:
        return sorted(
            (r for r in self.results if r.mode == self.primary_mode and (amp is None or r.amp == amp)),
            key=lambda r: r.batch_size,
        )

    def fits(self, result: PointResult) -> bool | None:
        return fits(result, self.usable_bytes)

    def max_batch_size(self) -> dict[str, int | None]:
        """Per AMP mode: the search's answer, else the largest swept batch size that fits."""
        if self.usable_bytes is None:
            return {}
        out = {}
        for amp in self.amp_modes:
            if amp in self.searches:
                out[amp] = self.searches[amp].best
            else:
                out[amp] = max((r.batch_size for r in self.primary(amp) if self.fits(r)), default=None)
        return out

    def fits_on(self) -> dict[str, dict[str, int | None]]:
        """Without a target: for common GPUs, the largest swept batch size that fits, per AMP mode."""
        out: dict[str, dict[str, int | None]] = {}
        for name in LADDER:
            usable = int(KNOWN_GPUS[name].memory_bytes * (1 - self.safety_margin))
            out[name] = {
                amp: max((r.batch_size for r in self.primary(amp) if fits(r, usable)), default=None)
                for amp in self.amp_modes
            }
        return out

    def smallest_gpu(self, result: PointResult) -> str | None:
        """The smallest common GPU the point fits on, with the safety margin."""
        for name in LADDER:
            if fits(result, int(KNOWN_GPUS[name].memory_bytes * (1 - self.safety_margin))):
                return name
        return None

    def amp_savings(self) -> list[dict[str, Any]]:
        """Per batch size and AMP mode: peak memory and speed relative to fp32 (off)."""
        off = {r.batch_size: r for r in self.primary("off") if r.status == "ok"}
        rows = []
        for amp in self.amp_modes:
            if amp == "off":
                continue
            for r in self.primary(amp):
                base = off.get(r.batch_size)
                if base is None or r.status != "ok":
                    continue
                assert r.peak_bytes is not None and base.peak_bytes is not None  # an ok point has its peak
                speed = (r.images_per_s / base.images_per_s) if r.images_per_s and base.images_per_s else None
                rows.append(
                    {
                        "batch_size": r.batch_size,
                        "amp": amp,
                        "memory_ratio": r.peak_bytes / base.peak_bytes,
                        "memory_saved_bytes": base.peak_bytes - r.peak_bytes,
                        "speed_ratio": speed,
                    }
                )
        return rows

    def estimate_errors(self) -> list[dict[str, Any]]:
        """Measured on a GPU with --estimate: the estimate's error per point, relative to the measured peak."""
        estimated = {(r.batch_size, r.amp): r for r in self.results if r.mode == "estimated" and r.status == "ok"}
        rows = []
        for r in self.results:
            e = estimated.get((r.batch_size, r.amp))
            if r.mode != "measured" or r.device == "cpu" or r.status != "ok" or e is None:
                continue
            assert r.peak_bytes is not None and e.peak_bytes is not None  # an ok point has its peak
            error = (e.peak_bytes - r.peak_bytes) / r.peak_bytes
            rows.append(
                {
                    "batch_size": r.batch_size,
                    "amp": r.amp,
                    "measured_peak_bytes": r.peak_bytes,
                    "estimated_peak_bytes": e.peak_bytes,
                    "error": error,
                    "within_target": abs(error) <= ESTIMATE_TARGET,
                }
            )
        return rows

    def peak_point(self) -> PointResult | None:
        """The point whose breakdown the report shows: the largest fitting (else largest ok) primary point."""
        ok = [r for r in self.primary() if r.status == "ok" and r.breakdown]
        fitting = [r for r in ok if self.fits(r) is not False]
        pool = fitting or ok
        return max(pool, key=lambda r: (r.batch_size, r.peak_bytes or 0)) if pool else None

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "shape": list(self.shape.hw),
            "shape_source": self.shape.source,
            "shape_distribution": self.shape.distribution or None,
            "device": self.device,
            "target": dataclasses.asdict(self.target) if self.target else None,
            "safety_margin": self.safety_margin,
            "usable_bytes": self.usable_bytes,
            "results": [{**r.to_json(), "fits": self.fits(r)} for r in self.results],
            "max_batch_size": self.max_batch_size(),
            "max_batch_size_source": {amp: "search" if amp in self.searches else "sweep" for amp in self.amp_modes}
            if self.usable_bytes is not None
            else {},
            "search_trials": {amp: s.trials for amp, s in self.searches.items()},
            "fits_on": self.fits_on() if self.target is None and self.primary_mode == "estimated" else None,
            "amp_savings": self.amp_savings(),
            "estimate_errors": self.estimate_errors(),
            "snapshot": self.snapshot_path,
            "warnings": self.warnings,
            "notes": self.notes,
        }
