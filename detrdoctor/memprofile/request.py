"""What a sweep point is asked to do and what it reports: plain data that crosses process boundaries as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from detr.config import RunConfig, config_from_dict


@dataclass
class PointRequest:
    """One batch size × AMP mode of a profile at a padded input shape, on a device."""

    config: dict[str, Any]  # dataclasses.asdict(RunConfig)
    batch_size: int
    amp: str  # off | bf16 | fp16
    shape: tuple[int, int]
    device: str = "cpu"
    warmup_steps: int = 2
    timed_steps: int = 3
    snapshot_path: str | None = None
    build: str | None = None  # "module:function" building (model, criterion) from a RunConfig; default DETR

    def run_config(self) -> RunConfig:
        cfg = config_from_dict(self.config, "memprofile request")
        cfg.model.backbone_weights = "none"  # memory does not depend on the weights' values: never download
        return cfg

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointRequest:
        return cls(**{**data, "shape": tuple(data["shape"])})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PointResult:
    """Peak allocated (torch.cuda.max_memory_allocated, or its estimate), peak reserved, what the device
    really used (NVML, CUDA context included), and speed; None where not known."""

    batch_size: int
    amp: str
    status: str  # ok | oom | error
    mode: str  # measured | estimated
    peak_bytes: int | None = None
    reserved_bytes: int | None = None
    device_bytes: int | None = None
    step_time_s: float | None = None
    images_per_s: float | None = None
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)  # category → module group → bytes
    device: str = ""
    source: str = "sweep"  # sweep | search
    error: str | None = None
    wall_s: float | None = None  # time this point took to measure or estimate

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointResult:
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def request_for(cfg: RunConfig, **kwargs: Any) -> PointRequest:
    return PointRequest(config=dataclasses.asdict(cfg), **kwargs)
