"""The command's options, checked and resolved into what to run: every bad input fails here, before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from detr.config import RunConfig
from detr.engine.device import parse_device
from detr.errors import ConfigError
from detrdoctor.memprofile.device import CudaDevice, cuda_device
from detrdoctor.memprofile.gpus import GPU, resolve_target
from detrdoctor.memprofile.shapes import parse_shape

if TYPE_CHECKING:
    from detrdoctor.memprofile.options import MemprofileOptions

AMP_CHOICES = ("both", "off", "bf16", "fp16")
COCO_NUM_CLASSES = 91  # COCO's largest category id + 1: what "auto" resolves to on COCO


@dataclass
class Plan:
    profile: str
    cfg: RunConfig
    batch_sizes: list[int]
    amp_modes: list[str]
    shape_option: str
    device: str | None  # "cuda:N" or "cpu" to measure on; None: estimate only
    gpu: CudaDevice | None  # the GPU measured on
    estimate: bool  # estimate for CUDA (always when there is nothing to measure on)
    target: GPU | None  # device memory to plan for: --gpu-memory, else the GPU measured on
    safety_margin: float
    find_max: bool
    snapshot: bool
    json_output: bool
    output_dir: Path | None
    in_process: bool
    build: str | None = None  # "module:function" for a model other than DETR (tests)
    notes: list[str] = field(default_factory=list)  # how the plan filled in what the options left open

    @property
    def usable_bytes(self) -> int | None:
        return self.target.usable_bytes(self.safety_margin) if self.target else None


def parse_batch_sizes(text: str) -> list[int]:
    """`1,2,4,8` → [1, 2, 4, 8] (sorted, duplicates dropped); anything but positive integers is an error."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ConfigError(f"--batch-sizes must be positive integers separated by commas, got '{text}'")
        sizes.append(int(item))
    return sorted(set(sizes))


def make_plan(options: MemprofileOptions) -> Plan:
    """Validate the memprofile options and resolve profile, device, AMP modes and target."""
    import torch

    from detrdoctor.runconfig import load_run_config

    batch_sizes = parse_batch_sizes(options.batch_sizes)
    if options.amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be both, off, bf16 or fp16, got '{options.amp}'")
    parse_shape(options.shape)
    if not 0 <= options.safety_margin < 1:
        raise ConfigError(f"--safety-margin must be a fraction in [0, 1), got {options.safety_margin}")
    cfg = load_run_config(options.profile, options.coco_path)
    notes = [resolve_classes(cfg, options.coco_path)]

    device, gpu = _resolve_device(options.device, torch.cuda.is_available(), torch.cuda.device_count())
    target = resolve_target(options.gpu_memory) if options.gpu_memory else None
    if target is None and gpu is not None:
        target = GPU(gpu.name, gpu.total_bytes, gpu.bf16)
    amp_modes = _amp_modes(options.amp, device, gpu, target)
    _check_gpu_requests(options, device, target)
    return Plan(
        profile=options.profile,
        cfg=cfg,
        batch_sizes=batch_sizes,
        amp_modes=amp_modes,
        shape_option=options.shape,
        device=device,
        gpu=gpu,
        estimate=options.estimate or device is None,
        target=target,
        safety_margin=options.safety_margin,
        find_max=options.find_max,
        snapshot=options.snapshot,
        json_output=options.json_output,
        output_dir=Path(options.output_dir) if options.output_dir else None,
        in_process=options.in_process,
        build=options.build,
        notes=[n for n in notes if n],
    )


def resolve_classes(cfg: RunConfig, coco_path: str | None) -> str:
    """An int num_classes for the model: the dataset's with --coco-path, else COCO's for "auto" (said in a note:
    memprofile must not need a dataset, and the class count changes the memory by kilobytes)."""
    from detr.config import AUTO
    from detr.data import resolve_num_classes

    if coco_path:
        resolve_num_classes(cfg)
    elif cfg.model.num_classes == AUTO:
        cfg.model.num_classes = COCO_NUM_CLASSES
        return (
            f'num_classes = "auto" without --coco-path: the model has COCO\'s {COCO_NUM_CLASSES} '
            "(the class count changes the memory by kilobytes)"
        )
    return ""


def _amp_modes(amp: str, device: str | None, gpu: CudaDevice | None, target: GPU | None) -> list[str]:
    """`both` → off plus the best AMP dtype of the device (bf16 where it runs, else fp16); a single mode is
    checked against the device: the CPU has no fp16 training, estimating fp16 needs the GPU named."""
    if device == "cpu":
        if amp == "fp16":
            raise ConfigError("--amp fp16 needs a CUDA GPU (its GradScaler is CUDA-only); use bf16 or off on the CPU")
        bf16 = True
    elif device is None:
        if amp == "fp16" and target is None:
            raise ConfigError(
                "--amp fp16: no GPU here; name the GPU to estimate for with --gpu-memory "
                "(e.g. V100-16GB), or use --amp bf16 or off"
            )
        bf16 = target.bf16 if target else True
    else:
        assert gpu is not None  # the CUDA device named
        bf16 = gpu.bf16
    if amp == "bf16" and not bf16:
        named = gpu or target
        assert named is not None  # bf16 is False only for a known GPU
        raise ConfigError(f"--amp bf16: {named.name} does not support bf16; use --amp fp16")
    return ["off", "bf16" if bf16 else "fp16"] if amp == "both" else [amp]


def _check_gpu_requests(options: MemprofileOptions, device: str | None, target: GPU | None) -> None:
    """--find-max needs memory to fit into; --snapshot needs a GPU and a folder."""
    if options.find_max and device == "cpu":
        raise ConfigError(
            "--find-max searches GPU memory: measure on a GPU, or estimate with --gpu-memory (without --device cpu)"
        )
    if options.find_max and target is None:
        raise ConfigError(
            "--find-max needs device memory to fit into: no GPU here, so give --gpu-memory (e.g. 24GiB or A100-80GB)"
        )
    if options.snapshot and device in (None, "cpu"):
        raise ConfigError("--snapshot records CUDA allocations: it needs a GPU to measure on")
    if options.snapshot and not options.output_dir:
        raise ConfigError("--snapshot writes its file into --output-dir: give one")


def _resolve_device(name: str, has_cuda: bool, count: int) -> tuple[str | None, CudaDevice | None]:
    """`auto` → the first GPU, else nothing to measure on (estimate); `cuda[:N]` must exist; `cpu` measures there."""
    kind, index = parse_device(name)
    if kind == "auto":
        if not has_cuda:
            return None, None
        kind, index = "cuda", 0
    if kind == "cpu":
        return "cpu", None
    if not has_cuda:
        raise ConfigError(
            f"--device {name}: no CUDA GPU is visible (run without --device to estimate, or see `detrdoctor env-check`)"
        )
    index = index or 0
    if index >= count:
        raise ConfigError(f"--device {name}: only {count} GPU(s) visible")
    return f"cuda:{index}", cuda_device(index)
