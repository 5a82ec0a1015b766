"""Re-running one training step: the reproduction bundle of `--on-anomaly stop`, and the detect_anomaly re-run.

A bundle holds everything the failing step consumed: the weights, the batch (and its image ids), the
RNG state at the start of the step, the config and the exact command line. Replay it with

    python -m detrdoctor.watchdog.bundle runs/<run>/repro-step<N>.pth
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from detr.engine.checkpointing import rng_state, save_atomic, set_rng_state
from detr.engine.step import weighted_loss
from detr.model import model_part
from detrdoctor.watchdog.groups import ForwardOrder, forward_rank

if TYPE_CHECKING:
    from detr.engine.callbacks import StepContext, TrainerView

BUNDLE_FORMAT = "detrdoctor-repro/1"


def to_device(value: Any, device: torch.device | str) -> Any:
    if torch.is_tensor(value):
        return value.detach().to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_device(v, device) for v in value]
    return value


def write_bundle(
    path: Path, trainer: TrainerView, ctx: StepContext, rng: dict[str, Any], observed: dict[str, Any]
) -> Path:
    """Save the failing step next to the run's checkpoint (atomically, like the checkpoint)."""
    bundle = {
        "format": BUNDLE_FORMAT,
        "step": ctx.step,
        "epoch": ctx.epoch,
        "batch_in_epoch": ctx.batch_in_epoch,
        "image_ids": [t.get("image_id") for t in ctx.targets],
        "argv": list(sys.argv),
        "command": shlex.join(sys.argv),
        "config": dataclasses.asdict(trainer.cfg),
        "device": str(trainer.device),
        "rng": rng,
        "model": to_device(trainer.model_without_ddp.state_dict(), "cpu"),
        "batch": to_device({"images": ctx.images, "mask": ctx.mask, "targets": ctx.targets}, "cpu"),
        "observed": observed,
    }
    save_atomic(bundle, path)
    return path


def load_bundle(path: str | Path) -> dict[str, Any]:
    bundle = torch.load(path, map_location="cpu", weights_only=True)
    if bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not a detrdoctor reproduction bundle")
    return bundle


def first_nonfinite(names: list[str], param_norms: torch.Tensor, first_call: dict[str, int]) -> str | None:
    """The parameter with a non-finite gradient latest in forward order: where the NaN/inf entered backward."""
    bad = (~torch.isfinite(param_norms)).tolist()
    rank = forward_rank(names, first_call)
    candidates = [i for i, b in enumerate(bad) if b]
    return names[max(candidates, key=rank.__getitem__)] if candidates else None


def replay_bundle(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Run the bundled step again: its loss, loss terms, gradient norm and first non-finite gradient."""
    from detr import build_model, infer_config_from_state_dict
    from detr.config import AUTO, config_from_dict
    from detr.engine.device import resolve_amp_dtype

    bundle = load_bundle(path)
    cfg = config_from_dict(bundle["config"], f"{path} (config)")
    cfg.model.backbone_weights = "none"  # the bundle carries every weight
    if cfg.model.num_classes == AUTO:  # a run's config records the resolved count; its weights tell it too
        cfg.model.num_classes = infer_config_from_state_dict(bundle["model"])["num_classes"]
    model, criterion, _ = build_model(cfg.model, train_backbone=cfg.train.lr_backbone > 0)
    model.load_state_dict(bundle["model"])
    model.to(device).train()
    criterion.to(device)
    batch = to_device(bundle["batch"], device)
    amp_dtype = resolve_amp_dtype(cfg.train.amp, torch.device(device))
    set_rng_state(bundle["rng"])
    order = ForwardOrder(model)
    with torch.autocast(torch.device(device).type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = model(batch["images"], batch["mask"])
    first_call = order.close()
    loss_dict = criterion(outputs, batch["targets"])
    loss = weighted_loss(loss_dict, criterion.weight_dict)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    norms = torch.stack([torch.linalg.vector_norm(g) if g is not None else torch.zeros(()) for g in grads])
    return {
        "step": bundle["step"],
        "loss": loss.item(),
        "loss_dict": {k: v.item() for k, v in loss_dict.items() if k in bundle["observed"]["loss_dict"]},
        "grad_norm": torch.linalg.vector_norm(norms).item(),
        "first_nonfinite_parameter": first_nonfinite([n for n, _ in named], norms, first_call),
        "observed": bundle["observed"],
    }


def locate_nonfinite(trainer: TrainerView, ctx: StepContext, rng: dict[str, Any]) -> dict[str, Any]:
    """Re-run the step's forward and backward under `torch.autograd.detect_anomaly`.

    Names the first module whose output is non-finite in the forward (where a NaN/inf is born), and the
    backward op that first returns NaN with the source line of its forward call. The real gradients are
    left alone (`autograd.grad`, not `backward`), and the RNG is put back as the step left it.
    """
    model = trainer.model_without_ddp  # no DDP: this re-run happens on one rank only
    params = [p for _, p in trainer.grad_params]
    found: dict[str, Any] = {}

    def check(name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if "module" not in found and torch.is_tensor(output) and not torch.isfinite(output).all():
                found["module"] = name

        return hook

    hooks = [m.register_forward_hook(check(n)) for n, m in model.named_modules() if n and not list(m.children())]
    after_step = rng_state()
    set_rng_state(rng)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.autograd.detect_anomaly(check_nan=True):
            warnings.simplefilter("always")
            with trainer.autocast():
                outputs = model(ctx.images, ctx.mask)
            loss = weighted_loss(trainer.criterion(outputs, ctx.targets), trainer.criterion.weight_dict)
            try:
                torch.autograd.grad(loss, params, allow_unused=True)
            except RuntimeError as e:
                match = re.search(r"Function '(\w+)' returned nan", str(e))
                found["op"] = match.group(1) if match else str(e)
        # The innermost frame of the forward traceback outside torch itself: the model's own line.
        torch_dir = str(Path(torch.__file__).parent)
        frames = [
            f
            for w in caught
            for f in re.findall(r'File "([^"]+)", line (\d+), in (\S+)', str(w.message))
            if not f[0].startswith(torch_dir)
        ]
        if frames:
            file, line, func = frames[-1]
            found["location"] = f"{file}:{line} ({func})"
    finally:
        for handle in hooks:
            handle.remove()
        set_rng_state(after_step)
    parts = []
    if "module" in found:
        parts.append(f"first non-finite output in the forward: {found['module']} ({model_part(found['module'])})")
    if "op" in found:
        parts.append(
            f"backward op returning NaN: {found['op']}" + (f" at {found['location']}" if "location" in found else "")
        )
    found["message"] = "; ".join(parts) or "the re-run under detect_anomaly found no non-finite value"
    return found


def main(argv: list[str] | None = None) -> int:
    """Replay a bundle and compare with what the run saw; exit 1 when the numbers differ."""
    parser = argparse.ArgumentParser(prog="python -m detrdoctor.watchdog.bundle", description=main.__doc__)
    parser.add_argument("bundle")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    result = replay_bundle(args.bundle, args.device)
    print(json.dumps(result, default=str, indent=2))
    seen, now = result["observed"]["loss"], result["loss"]
    same = (math.isnan(seen) and math.isnan(now)) or seen == now
    print("reproduced" if same else f"NOT reproduced: the run saw loss {seen}, the replay {now}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
