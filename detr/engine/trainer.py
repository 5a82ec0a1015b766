"""The training loop: explicit steps, exact resume, COCO evaluation, DDP under torchrun.

Diagnostics plug in as callbacks (see callbacks.py); nothing here draws on a terminal.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from detr.checkpoint import REINITIALISABLE, load_checkpoint_state_dict, load_fitting_state_dict
from detr.config import RunConfig, config_to_toml, validate
from detr.data.annotations import dataset_categories
from detr.engine.callbacks import Callback, StepContext
from detr.engine.checkpointing import (
    check_resume_not_finished,
    load_training_checkpoint,
    resume_epoch,
    rng_state,
    save_atomic,
    set_rng_state,
)
from detr.engine.device import resolve_amp_dtype, resolve_device
from detr.engine.distributed import broadcast_flag, init_distributed
from detr.engine.ema import ModelEMA
from detr.engine.evaluate import evaluate_coco
from detr.engine.loaders import build_eval_loader, build_loader
from detr.engine.metrics import MetricsWriter
from detr.engine.optim import build_optimizer, build_scheduler
from detr.engine.step import StepResult, TrainingStep
from detr.errors import DataError


def default_output_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def move_targets(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


class Trainer:
    """Builds the model, data, optimizer and run folder from a RunConfig; `fit()` trains."""

    def __init__(self, cfg: RunConfig, callbacks: Sequence[Callback] = (), output_dir: str | Path | None = None):
        from detr import build_model
        from detr.data import build_dataset, check_dataset, resolve_num_classes
        from detr.data.split import training_objects_limit

        validate(cfg)
        self.cfg, t = cfg, cfg.train
        self.callbacks = list(callbacks)
        self.device = resolve_device(t.device)
        self.amp_dtype = resolve_amp_dtype(t.amp, self.device)
        self.rank, self.world_size, local_rank = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0

        resume = load_training_checkpoint(t.resume) if t.resume else None
        if resume is not None:
            check_resume_not_finished(resume, t.epochs, t.max_steps, t.resume)
        self.output_dir = Path(
            output_dir or t.output_dir or (Path(t.resume).parent if t.resume else default_output_dir())
        )

        torch.manual_seed(t.seed)  # identical initial weights on every rank
        max_objects = training_objects_limit(cfg.model.num_queries, cfg.data.skip_images_over_queries)
        self.data_summary = check_dataset(cfg.data, "train", max_objects)
        resolve_num_classes(cfg)  # "auto" → the data's; config.toml then records the int (see fit)
        self.train_set = build_dataset(cfg.data, "train", train=True, seed=t.seed, max_objects=max_objects)
        self.val_set = build_dataset(cfg.data, "val", train=False, seed=t.seed) if t.eval_every > 0 else None
        self.train_loader = build_loader(
            self.train_set,
            cfg.data,
            t.batch_size,
            train=True,
            seed=t.seed,
            rank=self.rank,
            world_size=self.world_size,
            device=self.device,
        )

        # The training set's categories (id → name): checkpoints and config.toml carry them.
        self.categories = dataset_categories(self.train_set.coco)
        model, self.criterion, self.postprocessor = build_model(cfg.model, train_backbone=t.lr_backbone > 0)
        # Fine-tuning: tensors sized by another class count or num_queries keep their fresh initialisation.
        # A resumed run takes every weight from its checkpoint instead (no download of `weights` for nothing).
        self.reinitialised = (
            load_fitting_state_dict(model, load_checkpoint_state_dict(t.weights), t.weights, cfg.model)
            if t.weights and resume is None
            else []
        )
        model.to(self.device)
        self.criterion.to(self.device)
        if t.channels_last:
            model.backbone.to(memory_format=torch.channels_last)
        # Copied before compiling: the average is only evaluated, in plain eager mode.
        self.ema = ModelEMA(model, t.ema_decay) if t.ema_decay > 0 else None
        if t.compile_backbone:
            model.backbone.compile()
        self.model_without_ddp = model
        self.model = model
        if self.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.grad_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.grad_param_names = [n for n, _ in self.grad_params]
        self.optimizer = build_optimizer(model, t)
        self.scheduler = build_scheduler(self.optimizer, t)
        self.scaler = torch.amp.GradScaler("cuda") if t.amp == "fp16" else None
        self.step = TrainingStep(
            self.model,
            self.criterion,
            self.optimizer,
            [p for _, p in self.grad_params],
            device_type=self.device.type,
            amp_dtype=self.amp_dtype,
            clip_max_norm=t.clip_max_norm,
            scaler=self.scaler,
            ema=self.ema,
        )

        self.global_step = 0
        self.start_epoch = 0
        self.start_batch = 0
        self.corrupt_samples = 0
        self.last_eval: dict[str, Any] | None = None
        self._resume_rng = None
        if resume is not None:
            self._restore(resume)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsWriter(self.output_dir / "metrics.jsonl" if self.is_main else None)
        self._stop_requested = False  # Ctrl-C
        self.stop_request: tuple[str, int] | None = None  # (reason, exit code) set by request_stop
        # While the loop waits for a batch: (epoch, batch_in_epoch, RNG state) after the last finished step.
        self._data_wait: tuple[int, int, dict[str, Any]] | None = None
        self._data_wait_lock = threading.Lock()  # no step starts while another thread checkpoints the wait

    # ----------------------------------------------------------------- checkpoints
    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model_without_ddp.load_state_dict(ckpt["model"])
        if self.ema is not None:  # a checkpoint without an average starts one from its weights
            self.ema.load(ckpt.get("model_ema", ckpt["model"]), ckpt.get("ema_updates", 0))
        if "optimizer" in ckpt and "lr_scheduler" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.start_epoch = resume_epoch(ckpt)
        if "global_step" in ckpt:
            self.start_batch = ckpt["batch_in_epoch"]
            self.global_step = ckpt["global_step"]
            self._resume_rng = ckpt.get("rng")
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.corrupt_samples = ckpt.get("corrupt_samples", 0)
            for cb in self.callbacks:
                state = ckpt.get("callbacks", {}).get(type(cb).__name__)
                if state:
                    cb.load_state_dict(state)
        else:  # an official checkpoint
            self.global_step = self.start_epoch * len(self.train_loader)

    def checkpoint_state(self, epoch: int, batch_in_epoch: int, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        """The official keys (model, optimizer, lr_scheduler, epoch, args) plus what exact resume needs.

        `rng`: the RNG state to resume with, if not the current one."""
        return {
            "model": self.model_without_ddp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "args": dataclasses.asdict(self.cfg),
            "global_step": self.global_step,
            "batch_in_epoch": batch_in_epoch,
            "rng": rng if rng is not None else rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "corrupt_samples": self.corrupt_samples,
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "categories": self.categories,
            **({"model_ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates} if self.ema else {}),
        }

    def total_steps(self) -> int:
        """The optimizer steps of the whole run, resumed ones included: epochs × batches, capped by max_steps."""
        t = self.cfg.train
        steps = t.epochs * self.train_loader.batch_sampler.batches_per_epoch
        return min(steps, t.max_steps) if t.max_steps else steps

    def save_checkpoint(self, epoch: int, batch_in_epoch: int, rng: dict[str, Any] | None = None) -> None:
        if self.is_main:
            save_atomic(self.checkpoint_state(epoch, batch_in_epoch, rng), self.output_dir / "checkpoint.pth")

    # ----------------------------------------------------------------- events
    def emit_event(self, kind: str, message: str, severity: str = "info", **fields: Any) -> dict[str, Any]:
        """Write an event record and hand it to every callback."""
        event = {
            "type": "event",
            "step": self.global_step,
            "kind": kind,
            "severity": severity,
            "message": message,
            "signal": None,
            "value": None,
            "threshold": None,
            "module": None,
            **fields,
        }
        self.metrics.write(event)
        for cb in self.callbacks:
            cb.on_event(self, event)
        return event

    # ----------------------------------------------------------------- one step
    def autocast(self):
        return self.step.autocast()

    def train_step(self, ctx: StepContext) -> None:
        """The library's training step, with the callbacks' `after_backward` (which may veto the update)."""

        def after_backward(result: StepResult) -> bool:
            ctx.loss, ctx.loss_dict = result.loss, result.loss_dict
            ctx.param_norms, ctx.grad_norm = result.param_norms, result.grad_norm
            for cb in self.callbacks:
                cb.after_backward(self, ctx)
            return ctx.skip_step

        result = self.step.run(ctx.images, ctx.mask, ctx.targets, after_backward=after_backward)
        ctx.optimizer_stepped = result.stepped
        ctx.timings.update(result.timings)

    def step_record(self, ctx: StepContext) -> dict[str, Any]:
        """The metrics.jsonl step record; reads device values, so only built on logging steps."""
        names = [k for k in self.criterion.logged_terms if k in ctx.loss_dict]
        values = torch.stack([ctx.loss.detach().float()] + [ctx.loss_dict[k].detach().float() for k in names])
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        values = values.tolist()
        step_time = ctx.timings["step"]
        grad_norm = float(ctx.grad_norm)
        record = {
            "type": "step",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "loss": values[0],
            **dict(zip(names, values[1:])),
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "clip_ratio": self.step.clip_ratio(grad_norm),
            "step_time_s": step_time,
            "data_time_s": ctx.timings["data"],
            "images_per_s": len(ctx.targets) * self.world_size / step_time if step_time > 0 else None,
        }
        if self.scaler is not None:
            record["loss_scale"] = self.scaler.get_scale()  # after this step's update: the next step's scale
        if not ctx.optimizer_stepped:
            record["skipped"] = True
        return record

    # ----------------------------------------------------------------- the loop
    def _on_sigint(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True

    def request_stop(self, reason: str, exit_code: int = 1) -> None:
        """Stop at the end of the current step: a checkpoint is written and `fit()` reports `exit_code`."""
        self.stop_request = (reason, exit_code)

    def evaluate(self) -> dict[str, Any]:
        for cb in self.callbacks:
            cb.on_eval_start(self)
        start = time.perf_counter()
        loader = build_eval_loader(
            self.val_set,
            self.cfg.data,
            self.cfg.train.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            device=self.device,
        )
        model = self.ema.module if self.ema is not None else self.model_without_ddp
        stats = evaluate_coco(model, self.postprocessor, loader, self.val_set.coco, self.device, self.amp_dtype)
        record = {
            "type": "eval",
            "step": self.global_step,
            **stats,
            "ema": self.ema is not None,
            "eval_time_s": time.perf_counter() - start,
        }
        self.metrics.write(record)
        self.last_eval = record
        for cb in self.callbacks:
            cb.on_eval(self, record)
        return record

    def _check_corrupt(self, targets: list[dict[str, Any]]) -> None:
        for target in targets:
            for name in target.get("corrupt_files", ()):
                self.corrupt_samples += 1
                self.emit_event(
                    "corrupt_image",
                    f"could not decode {name}; replaced by another sample",
                    severity="warning",
                    path=str(name),
                )
        limit = self.cfg.data.max_corrupt_fraction * len(self.train_set)
        if self.corrupt_samples > max(limit, 0):
            raise DataError(
                f"{self.corrupt_samples} corrupt images skipped, more than max_corrupt_fraction="
                f"{self.cfg.data.max_corrupt_fraction} of {len(self.train_set)}; check the dataset "
                "(`detrdoctor env-check --coco-path ROOT`)"
            )

    def fit(self) -> dict[str, Any]:
        """Train until `epochs` or `max_steps`; returns a summary. Ctrl-C stops after the current step."""
        t = self.cfg.train
        if self.is_main:
            (self.output_dir / "config.toml").write_text(config_to_toml(self.cfg, self.categories))
        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        started = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        if self.global_step == 0 and self.data_summary:
            self.emit_event(
                "data_summary",
                self.data_summary.get("message", "dataset checked"),
                **{k: v for k, v in self.data_summary.items() if k != "message"},
            )
        if self.global_step == 0 and self.reinitialised:
            fields = sorted({REINITIALISABLE[k] for k in self.reinitialised})
            values = " and ".join(str(getattr(self.cfg.model, field)) for field in fields)
            self.emit_event(
                "weights_partial",
                f"fine-tuning from {self.cfg.train.weights}: re-initialised "
                f"{', '.join(self.reinitialised)}: the checkpoint was trained with another "
                f"{' and '.join(fields)} than this run's {values}; every other tensor loaded",
                reinitialised=self.reinitialised,
                weights=self.cfg.train.weights,
            )
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        try:
            interrupted = self._run_epochs()
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        if (
            t.eval_every > 0
            and (self.last_eval is None or self.last_eval["step"] != self.global_step)
            and not interrupted
            and self.stop_request is None
        ):
            self.evaluate()
        summary = {
            "steps": self.global_step,
            "epoch": self._epoch,
            "interrupted": interrupted,
            "elapsed_s": time.perf_counter() - started,
            "output_dir": str(self.output_dir),
            "checkpoint": str(self.output_dir / "checkpoint.pth"),
            "last_eval": self.last_eval,
            "corrupt_samples": self.corrupt_samples,
            "exit_code": 130 if interrupted else (self.stop_request[1] if self.stop_request else 0),
        }
        for cb in self.callbacks:
            cb.on_train_end(self, summary)
        self.metrics.close()
        return summary

    def _run_epochs(self) -> bool:
        """The epoch loop; returns True when stopped by Ctrl-C."""
        t = self.cfg.train
        self._epoch = self.start_epoch
        for epoch in range(self.start_epoch, t.epochs):
            self._epoch = epoch
            start_batch = self.start_batch if epoch == self.start_epoch else 0
            self.train_set.set_epoch(epoch)
            self.train_loader.batch_sampler.set_epoch(epoch, start_batch=start_batch)
            batch_in_epoch = start_batch
            stop = t.max_steps and self.global_step >= t.max_steps
            data_start = time.perf_counter()
            batches = iter([] if stop else self.train_loader)
            while True:
                self._data_wait = (epoch, batch_in_epoch, rng_state())  # what a resume must start from
                try:
                    batch = next(batches, None)
                except BaseException as error:  # a stall (raised by its detector) or a second Ctrl-C
                    interrupted = isinstance(error, KeyboardInterrupt)
                    if not interrupted and self.stop_request is None:
                        self._data_wait = None
                        raise
                    self.checkpoint_while_waiting(interrupted)
                    return interrupted
                with self._data_wait_lock:
                    self._data_wait = None
                if batch is None:
                    break
                images, mask, targets = batch
                data_time = time.perf_counter() - data_start
                self._check_corrupt(targets)
                self.global_step += 1
                ctx = StepContext(
                    step=self.global_step,
                    epoch=epoch,
                    batch_in_epoch=batch_in_epoch,
                    images=images.to(self.device, non_blocking=True),
                    mask=mask.to(self.device, non_blocking=True),
                    targets=move_targets(targets, self.device),
                )
                if self.cfg.train.channels_last:
                    ctx.images = ctx.images.contiguous(memory_format=torch.channels_last)
                for cb in self.callbacks:
                    cb.on_step_start(self, ctx)
                self.train_step(ctx)
                batch_in_epoch += 1
                ctx.timings.update(data=data_time, step=time.perf_counter() - data_start)
                record = self.step_record(ctx) if self.global_step % t.log_every == 0 else None
                if record is not None:
                    self.metrics.write(record)
                for cb in self.callbacks:
                    cb.on_step_end(self, ctx, record)
                interrupted = (
                    broadcast_flag(self._stop_requested, self.device) if self.world_size > 1 else self._stop_requested
                )
                if interrupted or self.stop_request or (t.max_steps and self.global_step >= t.max_steps):
                    self.save_checkpoint(epoch, batch_in_epoch)
                    resume_hint = f"checkpoint written, continue with --resume {self.output_dir / 'checkpoint.pth'}"
                    if interrupted:
                        self.emit_event("interrupted", f"stopped by Ctrl-C at step {self.global_step}; {resume_hint}")
                    elif self.stop_request:
                        self.emit_event("stopped", f"{self.stop_request[0]}; {resume_hint}", severity="error")
                    return bool(interrupted)
                data_start = time.perf_counter()
            if stop:
                return False
            self.scheduler.step()
            self.save_checkpoint(epoch + 1, 0)
            if t.eval_every > 0 and (epoch + 1) % t.eval_every == 0:
                self.evaluate()
        return False

    def checkpoint_while_waiting(self, interrupted: bool = False) -> bool:
        """While the loop waits for a batch, the model, optimizer and sampler position are those after the last
        finished step: write its checkpoint, which resumes exactly, and say so in a `stopped` (or `interrupted`)
        event. Callable from another thread (a stall detector whose main thread is blocked in the kernel).
        Returns False when the loop is not waiting for data or the checkpoint was already written."""
        with self._data_wait_lock:
            if self._data_wait is None:
                return False
            self.save_checkpoint(*self._data_wait)
            self._data_wait = None
        resume_hint = (
            f"checkpoint of step {self.global_step} written, continue with --resume "
            f"{self.output_dir / 'checkpoint.pth'}"
        )
        if interrupted:
            self.emit_event(
                "interrupted", f"stopped by Ctrl-C while waiting for data after step {self.global_step}; {resume_hint}"
            )
        else:
            reason = self.stop_request[0] if self.stop_request else "stopped while waiting for data"
            self.emit_event("stopped", f"{reason}; {resume_hint}", severity="error")
        return True
