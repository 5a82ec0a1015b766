"""The training loop: explicit steps, exact resume, COCO evaluation, DDP under torchrun.

Diagnostics plug in as callbacks (see callbacks.py); nothing here draws on a terminal.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist

from detr.checkpoint import REINITIALISABLE, load_checkpoint_state_dict, load_fitting_state_dict, load_state_dict_into
from detr.config import RunConfig, TrainConfig, config_to_toml, device_batch_size, optimizer_batch_size, validate
from detr.data.annotations import dataset_categories
from detr.engine.batches import TrainBatches
from detr.engine.best import BestTracker
from detr.engine.callbacks import Callback, StepContext
from detr.engine.checkpointing import (
    BEST,
    CHECKPOINT,
    check_resume_not_finished,
    load_training_checkpoint,
    remove_temporary_files,
    resolve_resume,
    resume_epoch,
    rng_state,
    save_atomic,
    set_rng_state,
)
from detr.engine.compile import CompileCounts, compile_model, recompile_limit
from detr.engine.device import resolve_amp_dtype, resolve_device
from detr.engine.distributed import agree_on_stop, broadcast_flag, init_distributed, is_collective_failure, peer_lost
from detr.engine.ema import ModelEMA
from detr.engine.evaluate import evaluate_coco
from detr.engine.loaders import batch_sampler, build_eval_loader, build_loader
from detr.engine.metrics import BoxStats, EvalRecord, EventRecord, LoggedTerms, MetricsWriter, StepRecord
from detr.engine.oom import (
    MAX_OOM_RETRIES,
    OOM_EXIT_CODE,
    OOM_RETRY_STEPS,
    BatchAdvisor,
    OomRetryFields,
    OutOfMemoryStop,
    describe_peak,
    first_line,
    free_memory,
    peak_memory,
)
from detr.engine.optim import build_optimizer, build_scheduler
from detr.engine.runlock import RunLock
from detr.engine.step import StepResult, TrainingStep
from detr.errors import CheckpointError, ConfigError, DataError, DetrError
from detr.outputs import make_folder, writing

# SIGTERM is what SLURM and Kubernetes send before they kill a preempted job; SIGUSR1 what SLURM sends ahead of
# a time limit with `--signal=USR1@90`. Either stops the run at the next step boundary with a checkpoint.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"; a job script requeues on it
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports it

if TYPE_CHECKING:
    from detr.engine.callbacks import TrainerView


def default_output_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def move_targets(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


class Trainer:
    """Builds the model, data, optimizer and run folder from a RunConfig; `fit()` trains.

    `batch_advisor` names the batch size that fits the device (memprofile's, from detrdoctor) in the line
    that stops a run out of memory.
    """

    def __init__(
        self,
        cfg: RunConfig,
        callbacks: Sequence[Callback] = (),
        output_dir: str | Path | None = None,
        overwrite: bool = False,
        batch_advisor: BatchAdvisor | None = None,
    ):
        """`output_dir` (else `cfg.train.output_dir`, else the resumed checkpoint's folder, else runs/<time>)
        is the run folder. A fresh run into a folder that holds a checkpoint is refused unless `overwrite`."""
        from detr import build_model
        from detr.data import build_dataset, check_dataset, resolve_num_classes
        from detr.data.split import training_objects_limit

        validate(cfg)
        self.cfg, t = cfg, cfg.train
        self.batch_size = device_batch_size(t)  # images per forward pass ("auto" must be resolved by now)
        self.eval_batch_size = self.batch_size
        self.batch_advisor = batch_advisor
        self.callbacks = list(callbacks)
        self.device = resolve_device(t.device)
        self.amp_dtype = resolve_amp_dtype(t.amp, self.device)
        self.rank, self.world_size, local_rank = init_distributed(self.device.type, t.dist_timeout_s)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        self.is_main = self.rank == 0

        # `auto` and a run folder name the folder's own checkpoint (none yet: a fresh start there)
        t.resume, run_dir = resolve_resume(t.resume, str(output_dir or t.output_dir or ""))
        resume = load_training_checkpoint(t.resume) if t.resume else None
        if resume is not None:
            check_resume_not_finished(resume, t.epochs, t.max_steps, t.resume)
        self.output_dir = Path(run_dir) if run_dir else default_output_dir()
        self.overwrite = overwrite and resume is None
        held = self.output_dir / CHECKPOINT  # another run's, unless it is the checkpoint resumed
        if held.exists() and not overwrite and (resume is None or held.resolve() != Path(t.resume).resolve()):
            raise ConfigError(
                f"{self.output_dir} already holds a run (its {CHECKPOINT}); continue it with --resume "
                f"{self.output_dir} (or --resume auto), replace it with --overwrite, or choose another --output-dir"
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
            optimizer_batch_size(t),
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
        compile_model(model, t)
        self._compiled = CompileCounts.now() if t.compile or t.compile_backbone else None
        self.model_without_ddp = model
        self.model: torch.nn.Module = model
        if self.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.grad_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.grad_param_names = [n for n, _ in self.grad_params]
        self.optimizer: torch.optim.Optimizer = build_optimizer(model, t)
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
            micro_batch_size=self.batch_size if optimizer_batch_size(t) > self.batch_size else None,
        )

        self.global_step = 0
        self.start_epoch = 0
        self.start_batch = 0
        self.corrupt_samples = 0
        self.last_eval: EvalRecord | None = None
        self.best = BestTracker(t.best_metric)
        self.early_stopped = False
        self.oom_retries = 0
        self._resume_rng = None
        if resume is not None:
            self._restore(resume)
        self._first_step = self.global_step  # out-of-memory retries: the first steps of this process
        self._checkpoint_position: tuple[int, int, dict[str, Any]] | None = None  # of the last checkpoint.pth
        self.metrics = MetricsWriter(None)  # opened by fit(), once the run folder is this run's
        self._lock = RunLock(self.output_dir)
        self._stop_signal = 0  # the signal that asked to stop at the next step boundary (Ctrl-C, SIGTERM, SIGUSR1)
        self.stop_request: tuple[str, int] | None = None  # (reason, exit code) set by request_stop
        self.batches = TrainBatches(self.train_loader, self.start_epoch, self.start_batch)

    # ----------------------------------------------------------------- checkpoints
    def _restore(self, ckpt: dict[str, Any]) -> None:
        # strict, with the one line `--weights` gives for a checkpoint of another model
        load_state_dict_into(self.model_without_ddp, ckpt["model"], self.cfg.train.resume, self.cfg.model)
        if self.ema is not None:  # a checkpoint without an average starts one from its weights
            self.ema.load(ckpt.get("model_ema", ckpt["model"]), ckpt.get("ema_updates", 0))
        if "optimizer" in ckpt and "lr_scheduler" in ckpt:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except ValueError as e:
                raise CheckpointError(
                    f"checkpoint {self.cfg.train.resume}: its optimizer state does not fit this run's trained "
                    f"parameters ({e}); resume with the run's own settings (lr_backbone, frozen layers), or start "
                    "from its weights with --weights"
                ) from None
            self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.start_epoch = resume_epoch(ckpt)
        if "global_step" in ckpt:
            self.start_batch = ckpt["batch_in_epoch"]
            self.global_step = ckpt["global_step"]
            self._resume_rng = ckpt.get("rng")
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.corrupt_samples = ckpt.get("corrupt_samples", 0)
            self.best.load_state_dict(ckpt.get("best_so_far", {}))
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
            "best_so_far": self.best.state_dict(),
            **({"model_ema": self.ema.module.state_dict(), "ema_updates": self.ema.updates} if self.ema else {}),
        }

    def total_steps(self) -> int:
        """The optimizer steps of the whole run, resumed ones included: epochs × batches, capped by max_steps."""
        t = self.cfg.train
        steps = t.epochs * batch_sampler(self.train_loader).batches_per_epoch
        return min(steps, t.max_steps) if t.max_steps else steps

    def save_checkpoint(self, epoch: int, batch_in_epoch: int, rng: dict[str, Any] | None = None) -> None:
        """Rank 0 writes the run's checkpoint atomically; a failed write leaves the previous one as it was."""
        self._checkpoint_position = (epoch, batch_in_epoch, rng if rng is not None else rng_state())
        if self.is_main:
            path = self.output_dir / CHECKPOINT
            with writing(path, f"the previous {CHECKPOINT} is intact"):
                save_atomic(self.checkpoint_state(*self._checkpoint_position), path)

    def save_best(self) -> None:
        """best.pth: checkpoint.pth's state (the evaluated weights, at the same position) plus `best`."""
        if self.is_main and self._checkpoint_position is not None:
            state = self.checkpoint_state(*self._checkpoint_position)
            path = self.output_dir / BEST
            with writing(path, f"the previous {BEST} is intact"):
                save_atomic({**state, "best": self.best.record()}, path)

    def write_config(self) -> None:
        """config.toml: the resolved configuration (re-written when an out-of-memory retry changes it)."""
        if self.is_main:
            path = self.output_dir / "config.toml"
            with writing(path):
                path.write_text(config_to_toml(self.cfg, self.categories))

    # ----------------------------------------------------------------- events
    def emit_event(self, kind: str, message: str, severity: str = "info", **fields: Any) -> EventRecord:
        """Write an event record and hand it to every callback."""
        # cast: the kind's own `fields` ride along, which no TypedDict can list
        event = cast(
            EventRecord,
            {
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
            },
        )
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

    def train_step_or_retry(self, ctx: StepContext) -> None:
        """`train_step`, retried at half the images per forward pass after an out-of-memory error in the first
        steps; OutOfMemoryStop when it cannot be (later, after MAX_OOM_RETRIES, at one image, or when the
        optimizer was changing the weights)."""
        while True:
            try:
                self.train_step(ctx)
                return
            except torch.OutOfMemoryError as error:  # handled outside: the traceback holds the step's tensors
                message, torn = first_line(error), self.step.updating
            self.step.abandon()
            for name in ("loss", "param_norms", "grad_norm"):  # the failed attempt's tensors
                setattr(ctx, name, None)
            ctx.loss_dict, ctx.skip_step, ctx.skip_reason = {}, False, ""
            free_memory(self.device)
            micro = self.step.micro_batch_size or len(ctx.targets)
            early = self.global_step - self._first_step <= OOM_RETRY_STEPS
            if torn or not early or self.oom_retries >= MAX_OOM_RETRIES or micro <= 1:
                raise OutOfMemoryStop(self._oom_stop_line(ctx, micro, message, torn))
            self.oom_retries += 1
            self._retry_train_at(ctx, micro, (micro + 1) // 2, message)

    def _retry_train_at(self, ctx: StepContext, micro: int, new: int, message: str) -> None:
        """Halve the images per forward pass, keep the optimizer's batch; config.toml records the new pair, so
        that a resumed run starts where this one got to."""
        batch = len(ctx.targets)
        self.step.micro_batch_size = new
        self.batch_size = self.eval_batch_size = new
        self.cfg.train.batch_size, self.cfg.train.effective_batch = new, batch
        self.write_config()
        steps = len(self.step.micro_batches(batch))
        fields = OomRetryFields(
            phase="train",
            batch_size=micro,
            new_batch_size=new,
            effective_batch=batch,
            accumulation_steps=steps,
            peak_bytes=peak_memory(self.device)[0],
            attempt=self.oom_retries,
        )
        self.emit_event(
            "oom_retry",
            f"out of memory at {micro} images per forward pass ({message}); retrying step {ctx.step} at {new} "
            f"per pass, {steps} accumulated per optimizer step of {batch} images (the same update)",
            severity="warning",
            **fields,
        )

    def _oom_stop_line(self, ctx: StepContext, micro: int, message: str, torn: bool) -> str:
        """The one line of an out-of-memory stop, after writing the checkpoint of the last finished step."""
        self.global_step -= 1  # this step did not finish
        position = self.batches.position
        hw = "×".join(str(n) for n in ctx.images.shape[-2:])
        peak = describe_peak(self.device, *peak_memory(self.device))
        if torn:  # the optimizer had begun to change the weights: the ones in memory are no step's
            checkpoint = self.output_dir / "checkpoint.pth"
            saved = f"the weights were being updated, so the last checkpoint written ({checkpoint}) stands"
        else:
            self.save_checkpoint(*position)
            saved = (
                f"checkpoint of step {self.global_step} written, continue with --resume "
                f"{self.output_dir / 'checkpoint.pth'}"
            )
        return (
            f"out of memory at step {ctx.step}, a batch of {len(ctx.targets)} images padded to {hw} "
            f"({micro} per forward pass): {peak}; {self._advice(micro)}; {saved} ({message})"
        )

    def _advice(self, failed: int) -> str:
        """memprofile's batch size for the line, weighed against the `failed` images per forward pass."""
        recommended = self.batch_advisor() if self.batch_advisor is not None else None
        if recommended is None:
            return "`detrdoctor memprofile --find-max` finds the batch size that fits"
        if recommended >= failed:  # the estimate says it fits: something else holds memory
            return (
                f"memprofile's estimate fits batch {recommended}, yet {failed} ran out (other processes on the "
                f"device, or fragmentation): try --batch-size {max(1, failed // 2)} with --effective-batch"
            )
        return (
            f"memprofile recommends --batch-size {recommended} (with --effective-batch to keep the optimizer's batch)"
        )

    def step_record(self, ctx: StepContext) -> StepRecord:
        """The metrics.jsonl step record; reads device values, so only built on logging steps."""
        assert ctx.loss is not None and ctx.grad_norm is not None, "built after the step"
        names = [k for k in self.criterion.logged_terms if k in ctx.loss_dict]
        device_values = torch.stack([ctx.loss.detach().float()] + [ctx.loss_dict[k].detach().float() for k in names])
        if self.world_size > 1:
            dist.all_reduce(device_values)
            device_values /= self.world_size
        values = device_values.tolist()
        terms: LoggedTerms = {}
        for name, value in zip(names, values[1:]):
            terms[name] = value
        step_time = ctx.timings["step"]
        grad_norm = float(ctx.grad_norm)
        record: StepRecord = {
            "type": "step",
            "step": ctx.step,
            "epoch": ctx.epoch,
            "loss": values[0],
            **terms,
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
        if self._stop_signal == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = self._stop_signal or signal.SIGINT

    def _on_preemption(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        """Stop at the next step boundary; while the loop waits for a batch (which may take long), at once."""
        self._stop_signal = signum

    def _stop_waiting(self) -> bool:
        """Whether the wait for the next batch should end now: a stop was requested, or (one process: other ranks
        may be inside a step's collective, which they leave only after this rank's step) a signal arrived."""
        return self.stop_request is not None or (bool(self._stop_signal) and self.world_size == 1)

    def request_stop(self, reason: str, exit_code: int = 1) -> None:
        """Stop at the end of the current step: a checkpoint is written and `fit()` reports `exit_code`."""
        self.stop_request = (reason, exit_code)

    def evaluate(self) -> EvalRecord:
        """Score the (averaged) weights; a new best writes best.pth before the record names it."""
        for cb in self.callbacks:
            cb.on_eval_start(self)
        assert self.val_set is not None, "evaluation needs eval_every > 0"
        start = time.perf_counter()
        stats = self._scored()
        t = self.cfg.train
        metric = cast("dict[str, float | None]", stats).get(t.best_metric)  # validated: one of BoxStats' keys
        new_best = self.best.update(metric, self.global_step, t.early_stop_min_delta)
        if new_best:
            self.save_best()
        record: EvalRecord = {
            "type": "eval",
            "step": self.global_step,
            **stats,
            "ema": self.ema is not None,
            "eval_time_s": time.perf_counter() - start,
            "batch_size": self.eval_batch_size,
            "best": self.best.record(),
            "new_best": new_best,
        }
        self.metrics.write(record)
        self.last_eval = record
        for cb in self.callbacks:
            cb.on_eval(self, record)
        return record

    def _scored(self) -> BoxStats:
        """COCO metrics of the validation set, retried at half the batch after an out-of-memory error (evaluation
        changes nothing); OutOfMemoryStop when even one image does not fit."""
        model = self.ema.module if self.ema is not None else self.model_without_ddp
        assert self.val_set is not None  # evaluate() runs only with a validation split
        while True:
            loader = build_eval_loader(
                self.val_set,
                self.cfg.data,
                self.eval_batch_size,
                rank=self.rank,
                world_size=self.world_size,
                device=self.device,
            )
            try:
                return evaluate_coco(model, self.postprocessor, loader, self.val_set.coco, self.device, self.amp_dtype)
            except torch.OutOfMemoryError as error:
                message = first_line(error)
            del loader
            free_memory(self.device)
            batch = self.eval_batch_size
            peak = peak_memory(self.device)[0]
            if batch <= 1:
                raise OutOfMemoryStop(
                    f"out of memory evaluating step {self.global_step} at one image per batch: "
                    f"{describe_peak(self.device, *peak_memory(self.device))}; {self._advice(1)}; the checkpoint of "
                    f"step {self.global_step} is written ({message})"
                )
            self.eval_batch_size = (batch + 1) // 2
            fields = OomRetryFields(
                phase="eval",
                batch_size=batch,
                new_batch_size=self.eval_batch_size,
                effective_batch=self.eval_batch_size,
                accumulation_steps=1,
                peak_bytes=peak,
                attempt=0,
            )
            self.emit_event(
                "oom_retry",
                f"out of memory evaluating at batch {batch} ({message}); evaluating again at batch "
                f"{self.eval_batch_size}",
                severity="warning",
                **fields,
            )

    def _early_stop_due(self) -> bool:
        """After an evaluation: patience evaluations without a gain → an `early_stop` event, and True."""
        t = self.cfg.train
        if not t.early_stop_patience or self.best.stale < t.early_stop_patience:
            return False
        best = self.best.record()
        where = f"best {t.best_metric} {best['value']:.4f} at step {best['step']}, in best.pth" if best else "no best"
        self.emit_event(
            "early_stop",
            f"{t.early_stop_patience} evaluations without a {t.best_metric} gain of more than "
            f"{t.early_stop_min_delta:g}: stopping at step {self.global_step} ({where})",
            metric=t.best_metric,
            patience=t.early_stop_patience,
            min_delta=t.early_stop_min_delta,
            best=best,
        )
        self.early_stopped = True
        return True

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
        self._take_run_folder()
        try:
            return self._fit(t)
        finally:
            self.metrics.close()
            self._lock.release()

    def _take_run_folder(self) -> None:
        """Rank 0 locks the run folder, clears what a killed run left (temporary checkpoint files, a torn last
        metrics line), opens metrics.jsonl and writes config.toml; every rank learns whether that worked."""
        error: DetrError | None = None
        notes: list[str] = []
        if self.is_main:
            try:
                notes = self._prepare_run_folder()
            except DetrError as e:
                error = e
        if self.world_size > 1 and broadcast_flag(error is not None, self.device):
            raise error or ConfigError(f"rank 0 could not take the run folder {self.output_dir}; see its message")
        if error is not None:
            raise error
        for note in notes:
            self.emit_event("run_folder", note, severity="warning")

    def _prepare_run_folder(self) -> list[str]:
        make_folder(self.output_dir)
        with writing(self._lock.path):
            stale = self._lock.acquire()
        try:
            notes = [f"took over the lock of {stale.describe()}, which ended without releasing it"] if stale else []
            files, size = remove_temporary_files(self.output_dir)
            if files:
                notes.append(
                    f"removed {files} temporary checkpoint file{'s' if files != 1 else ''} ({size / 1e6:.1f} MB) "
                    "left by an interrupted write"
                )
            metrics_path = self.output_dir / "metrics.jsonl"
            if self.overwrite:
                with writing(self.output_dir / CHECKPOINT):
                    (self.output_dir / CHECKPOINT).unlink(missing_ok=True)
            self.metrics = MetricsWriter(metrics_path, truncate=self.overwrite)
            if self.metrics.repaired_bytes:
                notes.append(
                    f"{metrics_path}: removed a torn last line ({self.metrics.repaired_bytes} bytes) left by a "
                    "killed run or a full disk"
                )
            self.write_config()
        except BaseException:
            self.metrics.close()
            self._lock.release()
            raise
        return notes

    def _fit(self, t: TrainConfig) -> dict[str, Any]:
        handlers = {signal.SIGINT: self._on_sigint, **dict.fromkeys(PREEMPTION_SIGNALS, self._on_preemption)}
        previous_handlers = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        started = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        if self.global_step == 0 and self.data_summary:
            self.emit_event("data_summary", "dataset checked", **self.data_summary)
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
        interrupted, stop_signal = False, 0
        try:
            stop_signal = self._run_epochs()
            interrupted = stop_signal == signal.SIGINT
            if (
                t.eval_every > 0
                and (self.last_eval is None or self.last_eval["step"] != self.global_step)
                and not stop_signal
                and self.stop_request is None
            ):
                self.evaluate()
        except OutOfMemoryStop as stop:
            self.request_stop(str(stop), OOM_EXIT_CODE)
            self.emit_event("stopped", str(stop), severity="error", reason="out_of_memory")
        except RuntimeError as e:
            if self.world_size == 1 or not is_collective_failure(e):
                raise
            raise peer_lost(e, self.rank, self.world_size, t.dist_timeout_s, self.global_step) from None
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        if interrupted:
            exit_code = EXIT_INTERRUPTED
        elif stop_signal:
            exit_code = EXIT_PREEMPTED
        else:
            exit_code = self.stop_request[1] if self.stop_request else 0
        summary = {
            "steps": self.global_step,
            "epoch": self._epoch,
            "interrupted": interrupted,
            "preempted": signal.Signals(stop_signal).name if stop_signal and not interrupted else None,
            "elapsed_s": time.perf_counter() - started,
            "output_dir": str(self.output_dir),
            "checkpoint": str(self.output_dir / "checkpoint.pth"),
            "last_eval": self.last_eval,
            "best": self.best.record(),
            "early_stopped": self.early_stopped,
            "corrupt_samples": self.corrupt_samples,
            "exit_code": exit_code,
        }
        for cb in self.callbacks:
            cb.on_train_end(self, summary)
        return summary

    def _stop_event(self, stop_signal: int, while_waiting: bool = False) -> None:
        """The event of a stop at a step boundary: `interrupted` (Ctrl-C), `preempted` (SIGTERM, SIGUSR1) or
        `stopped` (a diagnostic's request_stop)."""
        step = self.global_step
        when = f"while waiting for data after step {step}" if while_waiting else f"at step {step}"
        resume_hint = (
            f"checkpoint of step {self.global_step} written, continue with --resume {self.output_dir / CHECKPOINT}"
        )
        if stop_signal == signal.SIGINT:
            self.emit_event("interrupted", f"stopped by Ctrl-C {when}; {resume_hint}")
        elif stop_signal:
            name = signal.Signals(stop_signal).name
            self.emit_event(
                "preempted",
                f"stopped by {name} {when}; {resume_hint} (or --resume auto with the same --output-dir); "
                f"exit {EXIT_PREEMPTED}",
                signal=name,
            )
        else:
            reason = self.stop_request[0] if self.stop_request else "stopped while waiting for data"
            self.emit_event("stopped", f"{reason}; {resume_hint}", severity="error")

    def _run_epochs(self) -> int:
        """The epoch loop; returns the signal that stopped it at a step boundary (0: none)."""
        t = self.cfg.train
        self._epoch = self.start_epoch
        for epoch in range(self.start_epoch, t.epochs):
            self._epoch = epoch
            self.train_set.set_epoch(epoch)
            stop = t.max_steps and self.global_step >= t.max_steps
            data_start = time.perf_counter()
            for images, mask, targets in [] if stop else self.batches.epoch(epoch, self._stop_waiting):
                data_time = time.perf_counter() - data_start
                self._check_corrupt(targets)
                self.global_step += 1
                ctx = StepContext(
                    step=self.global_step,
                    epoch=epoch,
                    batch_in_epoch=self.batches.position[1],
                    images=images.to(self.device, non_blocking=True),
                    mask=mask.to(self.device, non_blocking=True),
                    targets=move_targets(targets, self.device),
                )
                if self.cfg.train.channels_last:
                    ctx.images = ctx.images.contiguous(memory_format=torch.channels_last)
                for cb in self.callbacks:
                    cb.on_step_start(self, ctx)
                self.train_step_or_retry(ctx)
                ctx.timings.update(data=data_time, step=time.perf_counter() - data_start)
                record = self.step_record(ctx) if self.global_step % t.log_every == 0 else None
                if record is not None:
                    self.metrics.write(record)
                for cb in self.callbacks:
                    cb.on_step_end(self, ctx, record)
                stop_signal = self._agreed_stop()
                if stop_signal or self.stop_request or (t.max_steps and self.global_step >= t.max_steps):
                    self.save_checkpoint(epoch, ctx.batch_in_epoch + 1)
                    if stop_signal or self.stop_request:
                        self._stop_event(stop_signal)
                    return stop_signal
                data_start = time.perf_counter()
            if self.batches.stopped_waiting:  # the state is the last finished step's: its checkpoint resumes exactly
                self.save_checkpoint(*self.batches.position)
                self._stop_event(self._stop_signal, while_waiting=True)
                return self._stop_signal
            if stop:
                return 0
            self.scheduler.step()
            self.save_checkpoint(epoch + 1, 0)
            self._report_compiles(epoch)
            stop_signal = self._agreed_stop()
            if stop_signal:  # no evaluation: a preempted job has seconds left
                self._stop_event(stop_signal)
                return stop_signal
            if t.eval_every > 0 and (epoch + 1) % t.eval_every == 0:
                self.evaluate()
                if self._early_stop_due():
                    return 0
        return 0

    def _report_compiles(self, epoch: int) -> None:
        """A `compile` event after an epoch that compiled graphs: recompiles are visible, not only slow."""
        if self._compiled is None:
            return
        before, now = self._compiled, CompileCounts.now()
        self._compiled = now
        new = now.graphs - before.graphs
        if new == 0:
            return
        limit = recompile_limit()
        over = now.graphs >= limit
        self.emit_event(
            "compile",
            f"epoch {epoch}: {new} graph{'s' if new > 1 else ''} compiled ({now.graphs} in all, "
            f"{now.graph_breaks} graph breaks)"
            + (
                f"; dynamo's recompile_limit is {limit}: past it the model runs uncompiled "
                "(fewer input sizes: [data] train_scales; or [train] compile = false)"
                if over
                else ""
            ),
            severity="warning" if over else "info",
            graphs=now.graphs,
            new_graphs=new,
            graph_breaks=now.graph_breaks,
            recompile_limit=limit,
        )

    def _agreed_stop(self) -> int:
        """The stop signal every rank agrees on (any rank's; 0: go on)."""
        return agree_on_stop(self._stop_signal, self.device) if self.world_size > 1 else self._stop_signal


if TYPE_CHECKING:

    def _trainer_is_a_view(trainer: Trainer) -> TrainerView:
        """mypy checks here that the Trainer has every member `TrainerView` promises callbacks, with its type."""
        return trainer
