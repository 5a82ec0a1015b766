"""Configuration as dataclasses: the model, the data pipeline, the trainer and the watchdog.

A profile is a TOML file with the optional sections [model], [data], [train], [watchdog] and [diagnostics]
whose keys are the fields below; unknown sections or keys are errors, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detr.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
AUTO = "auto"
ATTENTION_KINDS = ("fused", "reference")


@dataclass
class DETRConfig:
    """The model, matcher and loss. Defaults are the paper's DETR-R50 on COCO."""

    backbone: str = "resnet50"
    dilation: bool = False
    # The ResNet stage that feeds the transformer: 4 (C5, stride 32: the paper), 3 (C4, stride 16) or 2 (C3,
    # stride 8). The finer stages are for small inputs, where C5 leaves only a handful of tokens whose receptive
    # field is the whole image and whose boxes cannot be placed finer than a token.
    backbone_stage: int = 4
    backbone_weights: str = "none"  # "imagenet", "none" or a path to a torchvision state_dict
    # The paper freezes the stem and layer1 because they come pretrained; a backbone trained from scratch
    # (the CPU demo) learns much faster with them trainable.
    train_backbone_stem: bool = False
    # "frozen": FrozenBatchNorm2d (the paper, for pretrained weights); "batch": BatchNorm2d that learns
    # and tracks statistics — a ResNet trained from scratch needs real normalisation to train quickly.
    backbone_norm: str = "frozen"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 100
    dropout: float = 0.1
    # Dropout on the attention weights. None (unset): as `dropout`, which is what the official code's
    # `dropout` drops too. On a CPU only 0 keeps the fused kernel.
    attention_dropout: float | None = None
    # "fused": F.scaled_dot_product_attention, whose GPU kernels never hold the [B·heads, L, L] weights;
    # "reference": nn.MultiheadAttention's explicit softmax(QK^T)V, for numerics and attention maps.
    attention: str = "fused"
    # COCO's 91 (the paper's head, as the official `build` and Hugging Face's `DetrConfig()`). Profiles and the
    # CLI default to "auto": the largest category id of the training annotations + 1, resolved before the
    # model is built (`detr.data.classes.resolve_num_classes`).
    num_classes: int | str = 91
    aux_loss: bool = True
    eos_coef: float = 0.1
    set_cost_class: float = 1.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0

    @property
    def attention_dropout_rate(self) -> float:
        """The dropout on the attention weights: `attention_dropout`, or `dropout` when that is unset."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented and batched.

    An empty `coco_path` means the built-in synthetic dataset, generated once into a cache folder.
    """

    coco_path: str = ""
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_annotations: str = ""  # default: found by `detr.data.layout` (COCO, Roboflow, single-file exports)
    val_annotations: str = ""
    train_images: str = ""  # image folders; default: found with the annotation files
    val_images: str = ""
    # A single-file export (one annotation JSON) is split: this share of its images, spread evenly, is held out.
    val_fraction: float = 0.1
    train_scales: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    crop_resize_scales: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_probability: float = 0.5  # share of training images that take the random-crop branch
    crop_min_size: int = 384
    crop_max_size: int = 600
    val_size: int = 800
    hflip: bool = True
    num_workers: int = 2
    pin_memory: bool = True
    aspect_ratio_grouping: bool = False
    max_corrupt_fraction: float = 0.01
    # Images with more pixels are never decoded (a decompression bomb): skipped by predict, a failed data check
    # in training. The default is PIL's MAX_IMAGE_PIXELS; 0 turns the limit off.
    max_image_pixels: int = 89_478_485
    # Training leaves out images with more objects than num_queries (DETR outputs at most that many boxes).
    skip_images_over_queries: bool = False
    synthetic_train_images: int = 2000
    synthetic_val_images: int = 200
    synthetic_image_size: int = 640
    synthetic_seed: int = 0


@dataclass
class TrainConfig:
    """The optimisation schedule and the run's bookkeeping."""

    epochs: int = 300
    max_steps: int = 0  # 0: no limit
    # Images per forward pass and process; "auto": the largest that fits the device with a margin, chosen by
    # `detrdoctor train` before the trainer is built (config.toml then records the int).
    batch_size: int | str = 2
    # The optimizer's batch per process when larger than batch_size: the loader yields batches of this many
    # images and each step accumulates the gradients of micro-batches of batch_size (0: batch_size, no
    # accumulation). The loss is normalised over the whole batch, so the learning rate stays right.
    effective_batch: int = 0
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    lr_drop: int = 200  # epochs before the StepLR drop
    lr_drop_factor: float = 0.1
    clip_max_norm: float = 0.1  # 0 disables clipping
    amp: str = "off"  # off | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 42
    eval_every: int = 1  # epochs; 0 disables evaluation during training
    log_every: int = 10  # steps
    output_dir: str = ""  # default runs/<timestamp>
    resume: str = ""
    weights: str = ""
    channels_last: bool = False  # backbone in NHWC: faster convolutions on GPUs and with oneDNN on CPUs
    # torch.compile of the whole model (detr.engine.compile): the GPU lever; on a CPU the compile takes minutes
    # and did not pay (measured: benchmarks/bench_vs_hf.py). compile_backbone compiles the backbone alone.
    compile: bool = False
    compile_backbone: bool = False
    # 0 disables. Else an exponential moving average of the weights (decay per step) is what evaluation
    # scores and checkpoints ship as `model_ema`: it smooths the noise of a high learning rate.
    ema_decay: float = 0.0
    # DDP: a collective waits this long for a dead or stopped peer before the survivors report it (gloo's and
    # NCCL's own default is 30 minutes)
    dist_timeout_s: float = 300.0
    # Early stopping: end the run after this many evaluations without a gain of more than early_stop_min_delta
    # in best_metric over the best so far (0: never). Every evaluation that beats the best writes best.pth.
    early_stop_patience: int = 0
    early_stop_min_delta: float = 0.0
    best_metric: str = "AP"  # AP | AP50 | AP75 | APs | APm | APl: the eval record's metric that best.pth follows


@dataclass
class WatchdogConfig:
    """Gradient-health monitoring (see detrdoctor's gradient watchdog).

    The defaults raise no warning on healthy runs of the `tiny` and `demo` profiles.
    """

    enabled: bool = True
    on_anomaly: str = "skip"  # warn | skip | rollback | stop
    window: int = 100  # steps of history behind the robust statistics
    warmup_steps: int = 10  # steps recorded before the early-warning rules start judging
    spike_z: float = 6.0  # grad_norm_spike: robust z-score of the log gradient norm
    spike_min_sigma: float = 0.25  # floor of the log-norm spread (0.25 ≈ ±28 %), for quiet stretches
    growth_steps: int = 8  # grad_norm_growth / activation_growth: the trend's length
    growth_factor: float = 1.25  # grad_norm_growth: robust (Theil–Sen) growth per step over the trend
    activation_growth_factor: float = 1.5  # activation_growth: the same for the largest output of a group
    growth_rising: float = 0.75  # share of the trend's steps that must rise
    loss_spike: float = 1.0  # loss_spike: loss above the window's top by this many window ranges
    amp_skip_rate: float = 0.2  # amp_skip_rate: share of GradScaler-skipped steps in a full window
    overflow_ratio: float = 0.25  # overflow_risk: largest activation / overflow limit (fp16: 65504)
    sample_every: int = 50  # steps between attention-logit / update-to-weight samples (0: never)
    cooldown_steps: int = 25  # a warning of a kind is not repeated within this many steps
    snapshot_every: int = 50  # rollback: good steps between in-memory snapshots
    rollback_lr_factor: float = 0.5  # rollback: learning rates are multiplied by this
    max_rollbacks: int = 3  # rollback: after this many, the run stops instead
    detect_anomaly: bool = False  # re-run a non-finite step under torch.autograd.detect_anomaly to name the op
    forecast_steps: int = 3  # overflow_forecast: the growth rate is measured over this many steps (no warm-up)
    forecast_horizon: int = 20  # overflow_forecast: warn when the overflow limit is this many steps away at that rate
    skip_streak: int = 3  # skip: this many dropped steps in a row escalate (rollback once, then stop)
    skip_window: int = 20  # skip: ... as do more than skip_share of the last skip_window steps dropped
    skip_share: float = 0.25
    snapshots: int = 3  # rollback: snapshots kept, snapshot_every good steps apart; each rollback reaches further back


ON_STALL = ("wait", "stop")
BEST_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO's headline box metrics, all higher-is-better


@dataclass
class DiagnosticsConfig:
    """detrdoctor's other run diagnostics: stall detection, the live dashboard and the CPU flame graph.

    Plain settings (the library never draws anything): kept here so that profiles set them, `config.toml`
    records them and `--resume` restores them, like the watchdog's.
    """

    stall_after: float = 60.0  # seconds without a finished step (at least 10× the median step time); 0: off
    on_stall: str = "wait"  # wait | stop: after a stall dump, keep waiting or end the run with a checkpoint
    dashboard: bool = True  # the live dashboard on an interactive terminal (plain log lines elsewhere)
    profile_cpu: int = 0  # record a py-spy flame graph over this many steps (0: none)
    tensorboard: bool = False  # also write the scalars and events to <run folder>/tensorboard (package tensorboard)


@dataclass
class RunConfig:
    """Everything a run needs; what `config.toml` in a run folder holds."""

    description: str = ""
    # Profiles, the CLI and run folders size the classifier from the data unless they say otherwise.
    model: DETRConfig = field(default_factory=lambda: DETRConfig(num_classes=AUTO))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


SECTIONS = {f.name: f for f in dataclasses.fields(RunConfig) if f.name != "description"}
AUTO_KEYS = ("num_classes", "batch_size")  # keys that take "auto" or a positive integer
_AUTO_OR_INT = object()  # the template `apply_overrides` passes for them
UNSET_NUMBER_KEYS = ("attention_dropout",)  # numbers whose default None means "derived from another key"


def _coerce(value: Any, template: Any, where: str) -> Any:
    """Check a TOML value against the type of the field's default and convert int→float."""
    if template is _AUTO_OR_INT:
        if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ConfigError(f'{where}: expected "auto" or a positive integer, got {value!r}')
    if isinstance(template, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(template, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(template, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(template, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(template, list):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where}: expected a list of integers, got {value!r}")
        return list(value)
    return value


def apply_overrides(section: Any, values: dict[str, Any], where: str) -> None:
    """Set fields of a config dataclass from a mapping, rejecting unknown keys and wrong types."""
    known = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")
        template = _AUTO_OR_INT if key in AUTO_KEYS else 0.0 if key in UNSET_NUMBER_KEYS else getattr(section, key)
        setattr(section, key, _coerce(value, template, f"{where}.{key}"))


def config_from_dict(data: dict[str, Any], source: str = "profile") -> RunConfig:
    """Build a RunConfig from a parsed profile, validating every section and key."""
    cfg = RunConfig()
    for key, value in data.items():
        if key == "description":
            cfg.description = str(value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            apply_overrides(getattr(cfg, key), value, f"{source} [{key}]")
        else:
            raise ConfigError(f"{source}: unknown section or key '{key}' (known: description, {', '.join(SECTIONS)})")
    return cfg


def load_config_file(path: str | Path) -> RunConfig:
    """Read a profile TOML file into a RunConfig."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: profile file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return config_from_dict(data, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(cfg: RunConfig, categories: Sequence[Mapping[str, Any]] = ()) -> str:
    """Serialise a RunConfig as a profile TOML that `load_config_file` reads back unchanged.

    `categories` (the training set's [{"id", "name"}]) are appended as comments: they are facts of the
    annotations, not settings, so no profile key could set them or disagree with the data; the checkpoint
    carries them for programs, the comments are for the person reading the run folder.
    """
    lines = [f"description = {_toml_value(cfg.description)}"]
    for name in SECTIONS:
        lines.append(f"\n[{name}]")
        for key, value in dataclasses.asdict(getattr(cfg, name)).items():
            if value is not None:  # an unset key (TOML has no null) reads back as unset
                lines.append(f"{key} = {_toml_value(value)}")
    if categories:
        lines.append('\n# The training set\'s categories (id = name); checkpoint.pth carries them as "categories".')
        # TOML comments may not hold control characters: a name with a line break must not end the comment.
        lines.extend(
            f"# {c['id']} = {''.join(ch if ch.isprintable() else ' ' for ch in str(c['name']))}" for c in categories
        )
    return "\n".join(lines) + "\n"


def backbone_checks(m: DETRConfig) -> list[tuple[bool, str]]:
    """(holds, message) for each backbone rule: `validate` reports them, `build_backbone` enforces them."""
    return [
        (m.backbone in RESNETS, f"backbone must be one of {', '.join(RESNETS)}, got '{m.backbone}'"),
        (
            not (m.dilation and m.backbone in ("resnet18", "resnet34")),
            f"dilation (DC5) needs a bottleneck ResNet (resnet50/101), got '{m.backbone}'",
        ),
        (m.backbone_stage in (2, 3, 4), f"backbone_stage must be 2, 3 or 4, got {m.backbone_stage}"),
        (not (m.dilation and m.backbone_stage != 4), "dilation (DC5) dilates stage 4: it needs backbone_stage = 4"),
        (m.backbone_norm in ("frozen", "batch"), f"backbone_norm must be frozen or batch, got '{m.backbone_norm}'"),
    ]


def device_batch_size(t: TrainConfig) -> int:
    """The images per forward pass: `batch_size` once "auto" is resolved (by `detrdoctor train`)."""
    if not isinstance(t.batch_size, int):
        raise ConfigError(
            'batch_size = "auto" is chosen by `detrdoctor train` (memprofile\'s answer for the device); '
            "here give an integer (--batch-size N)"
        )
    return t.batch_size


def optimizer_batch_size(t: TrainConfig) -> int:
    """The images per optimizer step and process: effective_batch when set, else the batch size."""
    return t.effective_batch or device_batch_size(t)


def validate(cfg: RunConfig) -> None:
    """Reject values that cannot work, naming the flag or key at fault."""
    t, m, d = cfg.train, cfg.model, cfg.data
    checks = [
        (t.dist_timeout_s > 0, f"[train] dist_timeout_s must be positive, got {t.dist_timeout_s}"),
        (
            t.batch_size == AUTO or (isinstance(t.batch_size, int) and t.batch_size >= 1),
            f'batch size must be "auto" or at least 1, got {t.batch_size!r} (--batch-size)',
        ),
        (
            t.effective_batch == 0 or not isinstance(t.batch_size, int) or t.effective_batch >= t.batch_size,
            f"effective batch {t.effective_batch} is smaller than the batch size {t.batch_size}: give an "
            "--effective-batch of at least --batch-size (0: no accumulation)",
        ),
        (t.effective_batch >= 0, f"effective batch must be ≥ 0 (0: the batch size), got {t.effective_batch}"),
        (
            t.early_stop_patience >= 0 and t.early_stop_min_delta >= 0,
            "[train] early_stop_patience and early_stop_min_delta must be ≥ 0 (patience 0: never stop early)",
        ),
        (
            t.best_metric in BEST_METRICS,
            f"[train] best_metric must be one of {', '.join(BEST_METRICS)}, got '{t.best_metric}'",
        ),
        (t.lr > 0, f"learning rate must be positive, got {t.lr} (--lr)"),
        (t.lr_backbone >= 0, f"backbone learning rate must be ≥ 0, got {t.lr_backbone} (--lr-backbone)"),
        (t.clip_max_norm >= 0, f"clip max norm must be ≥ 0, got {t.clip_max_norm} (--clip-max-norm)"),
        (t.epochs >= 1, f"epochs must be at least 1, got {t.epochs} (--epochs)"),
        (t.max_steps >= 0, f"max steps must be ≥ 0, got {t.max_steps} (--max-steps)"),
        (t.amp in ("off", "bf16", "fp16"), f"amp must be off, bf16 or fp16, got '{t.amp}' (--amp)"),
        (t.log_every >= 1, f"log every must be at least 1, got {t.log_every} (--log-every)"),
        (0 <= t.ema_decay < 1, f"EMA decay must be in [0, 1) (0 disables), got {t.ema_decay} (--ema-decay)"),
        (t.eval_every >= 0, f"eval every must be ≥ 0, got {t.eval_every} (--eval-every)"),
        (d.num_workers >= 0, f"num workers must be ≥ 0, got {d.num_workers} (--num-workers)"),
        (0 <= d.crop_probability <= 1, f"[data] crop_probability must be in [0, 1], got {d.crop_probability}"),
        *backbone_checks(m),
        (
            m.backbone_norm == "frozen" or t.lr_backbone > 0,
            'backbone_norm = "batch" learns its statistics: it needs a backbone that trains (lr_backbone > 0)',
        ),
        (
            0 <= m.attention_dropout_rate < 1,
            f"[model] attention_dropout must be in [0, 1), got {m.attention_dropout}",
        ),
        (
            m.attention in ATTENTION_KINDS,
            f"[model] attention must be {' or '.join(ATTENTION_KINDS)}, got '{m.attention}'",
        ),
        (m.hidden_dim % m.nheads == 0, f"hidden_dim {m.hidden_dim} must be divisible by nheads {m.nheads}"),
        (
            m.num_classes == AUTO or (isinstance(m.num_classes, int) and m.num_classes >= 1),
            f'num_classes must be "auto" or at least 1, got {m.num_classes!r}',
        ),
        (m.num_queries >= 1, f"num_queries must be at least 1, got {m.num_queries}"),
        (0 <= d.val_fraction < 1, f"[data] val_fraction must be in [0, 1), got {d.val_fraction}"),
        (
            cfg.watchdog.on_anomaly in ("warn", "skip", "rollback", "stop"),
            f"on-anomaly must be warn, skip, rollback or stop, got '{cfg.watchdog.on_anomaly}'",
        ),
        (
            cfg.watchdog.window >= 2 and cfg.watchdog.growth_steps >= 2,
            "[watchdog] window and growth_steps must be at least 2",
        ),
        (0 < cfg.watchdog.rollback_lr_factor <= 1, "[watchdog] rollback_lr_factor must be in (0, 1]"),
        (
            cfg.watchdog.forecast_steps >= 2
            and min(cfg.watchdog.skip_streak, cfg.watchdog.skip_window, cfg.watchdog.snapshots) >= 1,
            "[watchdog] forecast_steps must be at least 2; skip_streak, skip_window and snapshots at least 1",
        ),
        (0 < cfg.watchdog.skip_share <= 1, "[watchdog] skip_share must be in (0, 1]"),
        (
            min(cfg.watchdog.warmup_steps, cfg.watchdog.sample_every, cfg.watchdog.max_rollbacks) >= 0
            and cfg.watchdog.snapshot_every >= 1,
            "[watchdog] step counts must be ≥ 0 (snapshot_every ≥ 1)",
        ),
        (
            cfg.diagnostics.on_stall in ON_STALL,
            f"on-stall must be {' or '.join(ON_STALL)}, got '{cfg.diagnostics.on_stall}' (--on-stall)",
        ),
        (
            cfg.diagnostics.stall_after >= 0,
            f"stall after must be ≥ 0 seconds (0 turns stall detection off), got {cfg.diagnostics.stall_after} "
            "(--stall-after)",
        ),
        (
            cfg.diagnostics.profile_cpu >= 0,
            f"profile cpu must be ≥ 0 steps, got {cfg.diagnostics.profile_cpu} (--profile-cpu)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
