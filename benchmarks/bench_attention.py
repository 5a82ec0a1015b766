"""Attention kernels side by side: ours (fused, F.scaled_dot_product_attention), the reference path
(nn.MultiheadAttention's explicit softmax) and Hugging Face's DetrForObjectDetection.

Speed: DETR-R50 train steps (forward, loss, backward, clipping, AdamW) and inference forwards, every
model with its backbone frozen (the same 18.1M trainable parameters) and the same dropouts, at each
attention-dropout setting. The models take turns, one step each in a rotating order, on the same padded
batch, so the machine's load hits all alike; medians and their ratios are printed. Hugging Face's column
needs `pip install transformers` (for this benchmark only); without it the column is skipped.

Memory (--memory): the peak of one real training step at SIZE×SIZE, fused against reference, each in a
fresh process (memprofile's measurement: live tensors on the CPU, the allocator's peak on a GPU).

    python benchmarks/bench_attention.py [--size 512] [--batch-size 2] [--rounds 10] [--attention-dropout 0 0.1]
    python benchmarks/bench_attention.py --memory [--size 1333] [--batch-size 1] [--device cuda --amp bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from detr import build_model
from detr.config import RunConfig
from detrdoctor.memprofile.isolation import run_isolated
from detrdoctor.memprofile.request import request_for
from detrdoctor.memprofile.step import Batch, synthetic_batch
from detrdoctor.profiles import load_profile

GiB = 1 << 30
# A CPU step at 1333×1333 takes a minute on two cores: one, whose peak is the first step's. A GPU warms up first.
STEPS = {"cpu": {"warmup_steps": 0, "timed_steps": 1}, "cuda": {"warmup_steps": 1, "timed_steps": 3}}
Step = Callable[[], None]


def padded_batch(batch_size: int, size: int, num_classes: int, device: torch.device) -> Batch:
    """A worst-case batch whose later images are narrower, so the key padding masks are real."""
    batch = synthetic_batch(batch_size, (size, size), num_classes, device)
    for i in range(1, batch_size):
        batch.mask[i, :, size - size // (4 * i) :] = True
        batch.images[i][:, batch.mask[i]] = 0
    return batch


def our_model(cfg: RunConfig, attention: str, attention_dropout: float, device: torch.device) -> tuple[nn.Module, ...]:
    cfg.model.attention, cfg.model.attention_dropout = attention, attention_dropout
    torch.manual_seed(0)
    model, criterion, _ = build_model(cfg.model, train_backbone=False)
    return model.to(device), criterion.to(device)


def hf_model(cfg: RunConfig, attention_dropout: float, device: torch.device) -> nn.Module | None:
    """DetrForObjectDetection configured as our model, with a random ResNet-50; None without transformers
    or for another backbone."""
    if cfg.model.backbone != "resnet50" or cfg.model.dilation or cfg.model.backbone_stage != 4:
        return None
    try:
        from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    except ImportError:
        return None
    m = cfg.model
    config = DetrConfig(
        backbone_config=ResNetConfig(depths=[3, 4, 6, 3], out_features=["stage4"]),  # random weights, no timm
        num_labels=m.num_classes,
        num_queries=m.num_queries,
        d_model=m.hidden_dim,
        encoder_layers=m.enc_layers,
        decoder_layers=m.dec_layers,
        encoder_attention_heads=m.nheads,
        decoder_attention_heads=m.nheads,
        encoder_ffn_dim=m.dim_feedforward,
        decoder_ffn_dim=m.dim_feedforward,
        dropout=m.dropout,
        activation_dropout=m.dropout,
        attention_dropout=attention_dropout,
        auxiliary_loss=m.aux_loss,
        eos_coefficient=m.eos_coef,
        class_cost=int(m.set_cost_class),
        bbox_cost=int(m.set_cost_bbox),
        giou_cost=int(m.set_cost_giou),
        bbox_loss_coefficient=int(m.bbox_loss_coef),
        giou_loss_coefficient=int(m.giou_loss_coef),
    )
    torch.manual_seed(0)
    model = DetrForObjectDetection(config)
    for p in model.model.backbone.parameters():
        p.requires_grad_(False)
    return model.to(device)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer_for(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def train_step(model: nn.Module, loss_of: Callable[[], torch.Tensor], cfg: RunConfig) -> Step:
    optimizer = optimizer_for(model, cfg)

    def step() -> None:
        loss = loss_of()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
        optimizer.step()

    return step


def ours_steps(
    model: nn.Module, criterion: nn.Module, batch: Batch, cfg: RunConfig, amp: torch.dtype | None, device: torch.device
) -> tuple[Step, Step]:
    def loss() -> torch.Tensor:
        with torch.autocast(device.type, amp, enabled=amp is not None):
            outputs = model(batch.images, batch.mask)
        losses = criterion(outputs, batch.targets)
        return sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses)

    @torch.no_grad()
    def infer() -> None:
        with torch.autocast(device.type, amp, enabled=amp is not None):
            model(batch.images, batch.mask)

    return train_step(model, loss, cfg), infer


def hf_steps(
    model: nn.Module, batch: Batch, cfg: RunConfig, amp: torch.dtype | None, device: torch.device
) -> tuple[Step, Step]:
    pixel_mask = (~batch.mask).long()  # Hugging Face marks the valid pixels
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in batch.targets]

    def loss() -> torch.Tensor:
        with torch.autocast(device.type, amp, enabled=amp is not None):
            return model(pixel_values=batch.images, pixel_mask=pixel_mask, labels=labels).loss

    @torch.no_grad()
    def infer() -> None:
        with torch.autocast(device.type, amp, enabled=amp is not None):
            model(pixel_values=batch.images, pixel_mask=pixel_mask)

    return train_step(model, loss, cfg), infer


def interleaved(steps: dict[str, Step], rounds: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each, taking turns in a rotating order."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            steps[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def report(title: str, median: dict[str, float], batch_size: int) -> None:
    cells = ", ".join(f"{name} {s * 1e3:.0f} ms ({batch_size / s:.2f} img/s)" for name, s in median.items())
    print(f"{title}: {cells}")
    ratios = [f"ours / reference {median['ours'] / median['reference']:.2f}×"]
    if "hugging face" in median:
        ratios.append(f"ours / Hugging Face {median['ours'] / median['hugging face']:.2f}×")
    print("  " + ", ".join(ratios))


def speed(args: argparse.Namespace, cfg: RunConfig, device: torch.device, amp: torch.dtype | None) -> None:
    batch = padded_batch(args.batch_size, args.size, cfg.model.num_classes, device)
    for p in args.attention_dropout:
        models: dict[str, nn.Module] = {}
        train: dict[str, Step] = {}
        infer: dict[str, Step] = {}
        for name, kind in (("ours", "fused"), ("reference", "reference")):
            models[name], criterion = our_model(cfg, kind, p, device)
            train[name], infer[name] = ours_steps(models[name], criterion, batch, cfg, amp, device)
        hf = hf_model(cfg, p, device)
        if hf is not None:
            models["hugging face"] = hf
            train["hugging face"], infer["hugging face"] = hf_steps(hf, batch, cfg, amp, device)
        print(
            f"\nattention dropout {p}, dropout {cfg.model.dropout}: trainable parameters "
            + ", ".join(f"{name} {trainable(model) / 1e6:.2f}M" for name, model in models.items())
        )
        if hf is not None:
            print(f"  Hugging Face transformers attention: {hf.config._attn_implementation}")
        else:
            print(
                "  Hugging Face skipped: compared for DETR-R50 only, with `pip install transformers` (not a "
                "detrdoctor dependency)"
            )
        for title, steps, training in (("train step", train, True), ("inference", infer, False)):
            for model in models.values():
                model.train(training)
            report(f"  {title}", interleaved(steps, args.rounds, args.warmup, device), args.batch_size)
        del models, train, infer, hf


def memory(args: argparse.Namespace, cfg: RunConfig) -> None:
    cfg.train.lr_backbone = 0.0  # the backbone frozen, as in the speed comparison
    peaks = {}
    for kind in ("fused", "reference"):
        cfg.model.attention, cfg.model.attention_dropout = kind, args.attention_dropout[0]
        request = request_for(
            cfg,
            batch_size=args.batch_size,
            amp=args.amp,
            shape=(args.size, args.size),
            device=args.device,
            **STEPS["cpu" if args.device == "cpu" else "cuda"],
        )
        result = run_isolated(request)
        if result.status != "ok":
            print(f"{kind}: {result.status} ({result.error})")
            return
        peaks[kind] = result.peak_bytes
        rss = f", process peak RSS {result.device_bytes / GiB:.2f} GiB" if args.device == "cpu" else ""
        print(f"{kind}: peak {result.peak_bytes / GiB:.2f} GiB{rss}, {result.images_per_s:.2f} img/s")
    print(
        f"fused / reference peak: {peaks['fused'] / peaks['reference']:.2f}× "
        f"({args.size}×{args.size}, batch {args.batch_size}, amp {args.amp}, attention dropout "
        f"{args.attention_dropout[0]}, {args.device})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="detr-r50")
    parser.add_argument("--size", type=int, default=512, help="padded batch side (pixels)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed steps of each model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attention-dropout", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--memory", action="store_true", help="peak memory of a training step instead of speed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_profile(args.profile)
    cfg.model.backbone_weights = "none"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.profile} at {args.size}×{args.size}, "
        f"batch {args.batch_size}, amp {args.amp}, {args.device}"
    )
    if args.memory:
        memory(args, cfg)
        return 0
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    speed(args, cfg, torch.device(args.device), amp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
