"""The `detrdoctor` command line: a thin layer of Typer commands over library functions.

Nothing here imports torch at module level, so `detrdoctor --help` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

app = typer.Typer(
    name="detrdoctor",
    help="Train DETR object detectors and diagnose what goes wrong: environment, memory, data loading, gradients.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def run_guarded(fn: Callable[[], int | None]) -> None:
    """Run a command body; user errors become one red line on stderr and a non-zero exit."""
    from detr.errors import DetrError

    try:
        code = fn()
    except DetrError as e:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    raise typer.Exit(code or 0)


TRAIN_ANNOTATIONS_HELP = (
    "Training annotation file (COCO JSON; relative: under --coco-path). Default: found in "
    "--coco-path (COCO, Roboflow, CVAT and Label Studio layouts)."
)
IMAGES_HELP = "{} image folder (relative: under --coco-path; default: found with the annotations)."
VAL_ANNOTATIONS_HELP = (
    "Validation annotation file (default: found in --coco-path; a single-file export holds out "
    "\\[data] val_fraction of its images)."
)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    """With no command, `detrdoctor` prints its help (exit 0): `detrdoctor train` runs the demo."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@app.command()
def train(
    profile: str | None = typer.Option(
        None, help="Profile name or TOML path (default: demo, or detr-r50 with --coco-path)."
    ),
    coco_path: str | None = typer.Option(
        None,
        "--data",
        "--coco-path",
        help="Dataset root, any layout env-check recognises (default: the synthetic dataset).",
    ),
    output_dir: str | None = typer.Option(None, help="Run folder (default: runs/<timestamp>)."),
    epochs: int | None = typer.Option(None, help="Number of epochs."),
    max_steps: int | None = typer.Option(None, help="Stop when the global step count reaches N."),
    batch_size: str | None = typer.Option(
        None,
        help="Images per forward pass (per process), or auto: the largest that fits the device with a 10% margin "
        "(memprofile: measured on a GPU, estimated without one).",
    ),
    effective_batch: int | None = typer.Option(
        None, help="Images per optimizer step (per process), accumulating gradients over --batch-size passes."
    ),
    gpu_memory: str | None = typer.Option(
        None, help="Memory --batch-size auto plans for: a size (24GiB) or a GPU name (default: the device's)."
    ),
    lr: float | None = typer.Option(None, help="Learning rate of the transformer and heads."),
    lr_backbone: float | None = typer.Option(None, help="Learning rate of the backbone (0 freezes it)."),
    clip_max_norm: float | None = typer.Option(None, help="Gradient clipping max norm (0 disables)."),
    ema_decay: float | None = typer.Option(
        None, help="Evaluate and ship an EMA of the weights (e.g. 0.998; 0 disables)."
    ),
    amp: str | None = typer.Option(None, help="Mixed precision: off, bf16 or fp16."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    num_workers: int | None = typer.Option(None, help="DataLoader worker processes."),
    resume: str | None = typer.Option(
        None,
        help="Continue exactly from a checkpoint, in its folder; a run folder or auto (the --output-dir): its "
        "checkpoint, or a fresh start when it has none yet.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start afresh in an --output-dir that holds a run (its checkpoint is replaced)."
    ),
    weights: str | None = typer.Option(None, help="Load model weights only (path or URL; official checkpoints too)."),
    backbone_weights: str | None = typer.Option(
        None, help="imagenet, none or a path to a torchvision ResNet state_dict."
    ),
    seed: int | None = typer.Option(None, help="Random seed."),
    eval_every: int | None = typer.Option(None, help="Evaluate every N epochs (0: never during training)."),
    log_every: int | None = typer.Option(None, help="Write a step record every N steps."),
    on_anomaly: str | None = typer.Option(None, help="Gradient watchdog action: warn, skip, rollback or stop."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Plain log lines instead of the live dashboard."),
    profile_cpu: int | None = typer.Option(None, help="Record a py-spy flame graph over this many steps."),
    stall_after: float | None = typer.Option(
        None,
        help="Seconds without a finished step (at least 10× the median "
        "step time) before the stacks are dumped; 0 turns stall detection "
        "off (profile default: 60).",
    ),
    on_stall: str | None = typer.Option(
        None, help="After a stall dump: wait (keep going) or stop the run (profile default: wait)."
    ),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Also write scalars and events for TensorBoard "
        "into the run folder's tensorboard/ (pip install 'detrdoctor[tensorboard]').",
    ),
    train_annotations: str | None = typer.Option(None, help=TRAIN_ANNOTATIONS_HELP),
    val_annotations: str | None = typer.Option(None, help=VAL_ANNOTATIONS_HELP),
    train_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Training")),
    val_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Validation")),
) -> None:
    """Train DETR (default: the demo profile on the synthetic dataset, on the CPU)."""
    from detrdoctor.commands.train import TrainOptions, run_train

    options = TrainOptions(
        profile=profile,
        coco_path=coco_path,
        output_dir=output_dir,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        effective_batch=effective_batch,
        gpu_memory=gpu_memory,
        lr=lr,
        lr_backbone=lr_backbone,
        clip_max_norm=clip_max_norm,
        ema_decay=ema_decay,
        amp=amp,
        device=device,
        num_workers=num_workers,
        resume=resume,
        weights=weights,
        backbone_weights=backbone_weights,
        seed=seed,
        eval_every=eval_every,
        log_every=log_every,
        on_anomaly=on_anomaly,
        dashboard=False if no_dashboard else None,
        profile_cpu=profile_cpu,
        stall_after=stall_after,
        on_stall=on_stall,
        tensorboard=True if tensorboard else None,
        train_annotations=train_annotations,
        val_annotations=val_annotations,
        train_images=train_images,
        val_images=val_images,
        overwrite=overwrite,
    )
    run_guarded(lambda: run_train(options))


@app.command()
def evaluate(
    weights: str = typer.Option(..., help="Checkpoint to evaluate (ours or official)."),
    profile: str | None = typer.Option(
        None, help="Profile name or TOML path (default: the checkpoint's config, else detr-r50)."
    ),
    coco_path: str | None = typer.Option(
        None,
        "--data",
        "--coco-path",
        help="Dataset root, any layout env-check recognises (default: the synthetic dataset).",
    ),
    batch_size: int | None = typer.Option(None, help="Images per batch."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    num_workers: int | None = typer.Option(None, help="DataLoader worker processes."),
    breakdown: bool = typer.Option(
        False,
        "--breakdown",
        help="Also show what holds AP down: AP by IoU, labels, loose and spare boxes, missed objects; with --confusion,"
        " --pr and --errors.",
    ),
    per_class: bool = typer.Option(
        False, "--per-class", help="Also show each category's AP, AP50, and precision, recall and F1 at its best F1."
    ),
    confusion: bool = typer.Option(
        False, "--confusion", help="Also show the confusion matrix (IoU ≥ 0.5; categories and background)."
    ),
    pr: bool = typer.Option(False, "--pr", help="Also show per-class precision/recall/F1 and precision–recall curves."),
    errors: bool = typer.Option(
        False, "--errors", help="Also show TIDE's six error types: the AP50 each costs, and how many."
    ),
    threshold: float | None = typer.Option(
        None, help="Score a box needs to count in the confusion matrix (default: each class's best-F1 threshold)."
    ),
    out: str | None = typer.Option(
        None, help="Write precision–recall curves and the confusion matrix to FILE.png or .svg (the plot extra)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    train_annotations: str | None = typer.Option(None, help=TRAIN_ANNOTATIONS_HELP),
    val_annotations: str | None = typer.Option(None, help=VAL_ANNOTATIONS_HELP),
    train_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Training")),
    val_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Validation")),
) -> None:
    """COCO box AP of a checkpoint on the validation split."""
    from detrdoctor.commands.evaluate import EvaluateOptions, run_evaluate

    options = EvaluateOptions(
        weights=weights,
        profile=profile,
        coco_path=coco_path,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        breakdown=breakdown,
        per_class=per_class,
        json_output=json_output,
        train_annotations=train_annotations,
        val_annotations=val_annotations,
        train_images=train_images,
        val_images=val_images,
        confusion=confusion,
        pr=pr,
        errors=errors,
        threshold=threshold,
        out=out,
    )
    run_guarded(lambda: run_evaluate(options))


@app.command()
def predict(
    sources: list[str] | None = typer.Argument(None, help="Image files and folders (searched recursively)."),
    weights: str = typer.Option(..., help="Checkpoint to run (ours or official)."),
    coco_path: str | None = typer.Option(
        None, "--data", "--coco-path", help="With --split: the dataset root (default: the checkpoint's)."
    ),
    split: str | None = typer.Option(None, help="Run on a dataset split (train or val) instead of files."),
    out: str = typer.Option("predictions", help="Folder for the drawn images and predictions.json."),
    threshold: float = typer.Option(0.5, help="Draw boxes with at least this score (predictions.json keeps all)."),
    batch_size: int | None = typer.Option(None, help="Images per batch (default: the checkpoint's)."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    amp: str = typer.Option("off", help="Mixed precision: off, bf16 or fp16."),
    compare: bool = typer.Option(False, "--compare", help="With --split: the ground truth drawn beside the boxes."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run a checkpoint on images or a dataset split: drawn boxes and COCO-format predictions.json."""
    from detrdoctor.commands.predict import PredictOptions, run_predict

    options = PredictOptions(
        weights=weights,
        sources=list(sources or []),
        coco_path=coco_path,
        split=split,
        out=out,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        amp=amp,
        compare=compare,
        json_output=json_output,
    )
    run_guarded(lambda: run_predict(options))


@app.command()
def export(
    images: list[str] | None = typer.Argument(
        None, help="Images or folders for the check (default: synthetic images, or --split)."
    ),
    weights: str = typer.Option(..., help="Checkpoint to export (ours or official)."),
    format: str = typer.Option("onnx", "--format", help="File format (onnx)."),
    out: str = typer.Option("model.onnx", help="The file to write (its folder must exist)."),
    opset: int | None = typer.Option(None, help="ONNX opset (default 18; up to what the installed onnx writes)."),
    batch: str = typer.Option("dynamic", help="Batch size fixed in the file, or dynamic."),
    size: str = typer.Option("dynamic", help="Image size fixed in the file: --size H W, or dynamic."),
    postprocess: bool = typer.Option(
        False, "--postprocess", help="Include the post-processing: outputs scores, labels and boxes in pixels."
    ),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare PyTorch and onnxruntime (on by default)."),
    split: str | None = typer.Option(None, help="Check on a dataset split (val), with AP of both."),
    data: str | None = typer.Option(
        None, "--data", "--coco-path", help="With --split: the dataset root (default: the checkpoint's)."
    ),
    threshold: float = typer.Option(0.5, help="Detections with at least this score must match."),
    rtol: float = typer.Option(1e-3, help="Relative tolerance of the outputs."),
    atol: float = typer.Option(1e-5, help="Absolute tolerance of the outputs."),
    timing_runs: int = typer.Option(10, help="Timed runs per runtime after 2 warm-ups (median; 0: no timing)."),
    batch_size: int | None = typer.Option(None, help="Images per batch in the check (default: the checkpoint's)."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N (onnxruntime: CUDA when it has it)."),
    verify: str | None = typer.Option(None, help="Check this existing ONNX file instead of exporting one."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a checkpoint to ONNX and check that onnxruntime detects what PyTorch detects."""
    from detrdoctor.commands.export import ExportOptions, run_export

    options = ExportOptions(
        weights=weights,
        format=format,
        out=out,
        opset=opset,
        batch=batch,
        size=size,
        postprocess=postprocess,
        check=check,
        images=list(images or []),
        split=split,
        data=data,
        threshold=threshold,
        rtol=rtol,
        atol=atol,
        timing_runs=timing_runs,
        batch_size=batch_size,
        device=device,
        verify=verify,
        json_output=json_output,
    )
    run_guarded(lambda: run_export(options))


@app.command()
def plot(
    run_dirs: list[str] = typer.Argument(..., help="Run folders (or their metrics.jsonl) to overlay, aligned by step."),
    out: str | None = typer.Option(None, help="Write the figure to FILE.png or .svg (needs detrdoctor[plot])."),
    smooth: int = typer.Option(1, help="Trailing mean over N logged records for losses and rates (1: raw)."),
    json_output: bool = typer.Option(False, "--json", help="Print per-run last/best values and events as JSON."),
) -> None:
    """Plot runs from their metrics.jsonl: losses, AP, gradient norm with watchdog events, learning rate, throughput."""
    from detrdoctor.commands.plot import PlotOptions, run_plot

    run_guarded(lambda: run_plot(PlotOptions(run_dirs=run_dirs, out=out, smooth=smooth, json_output=json_output)))


@app.command("profiles")
def list_profiles(json_output: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the named presets."""
    from detrdoctor.commands.profiles import ProfilesOptions, run_profiles

    run_guarded(lambda: run_profiles(ProfilesOptions(json_output=json_output)))


@app.command()
def synth(
    out: str = typer.Argument(..., help="Output folder (gets train2017/, val2017/, annotations/)."),
    train_images: int = typer.Option(2000, help="Images in the training split."),
    val_images: int = typer.Option(200, help="Images in the validation split."),
    image_size: int = typer.Option(640, help="Longer image side in pixels."),
    seed: int = typer.Option(0, help="Same seed → byte-identical dataset."),
) -> None:
    """Render a synthetic COCO-format detection dataset."""
    from detrdoctor.commands.synth import SynthOptions, run_synth

    options = SynthOptions(out=out, train_images=train_images, val_images=val_images, image_size=image_size, seed=seed)
    run_guarded(lambda: run_synth(options))


@app.command()
def convert(
    root: str = typer.Argument(..., help="A dataset folder in any layout detrdoctor reads (COCO, YOLO, VOC, ...)."),
    out: str = typer.Argument(..., help="Output folder (new or empty): gets annotations/, train2017/, val2017/."),
    copy: bool = typer.Option(False, "--copy", help="Copy the images (default: hard links, else symbolic links)."),
    val_fraction: float | None = typer.Option(
        None, help="Share of the images held out for val when the dataset has one split (default: 0.1)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write a dataset as a COCO export (annotations/instances_{train,val}2017.json + images), for any tool."""
    from detrdoctor.commands.convert import ConvertOptions, run_convert

    options = ConvertOptions(root=root, out=out, copy=copy, val_fraction=val_fraction, json_output=json_output)
    run_guarded(lambda: run_convert(options))


@app.command("env-check")
def env_check(
    json_output: bool = typer.Option(False, "--json", help="Print checks, summary and facts as JSON."),
    coco_path: str | None = typer.Option(
        None, "--data", "--coco-path", help="Also check a COCO-format dataset folder."
    ),
    strict: bool = typer.Option(False, help="Exit 1 on warnings too."),
    from_facts: str | None = typer.Option(
        None, "--from", help="Judge facts collected elsewhere (a previous --json output)."
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda: with cuda, a missing GPU is a failure."),
    num_workers: int | None = typer.Option(None, help="The num_workers you plan to use."),
    profile: str | None = typer.Option(
        None, help="With --coco-path: the profile to judge the dataset against (default: detr-r50)."
    ),
    train_annotations: str | None = typer.Option(None, help=TRAIN_ANNOTATIONS_HELP),
    val_annotations: str | None = typer.Option(None, help=VAL_ANNOTATIONS_HELP),
    train_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Training")),
    val_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Validation")),
) -> None:
    """Judge the whole stack (torch, torchvision, CUDA, NumPy, pycocotools, NVML, host limits) and name each fix."""
    from detrdoctor.commands.env_check import EnvCheckOptions, run_env_check

    options = EnvCheckOptions(
        json_output=json_output,
        coco_path=coco_path,
        strict=strict,
        from_facts=from_facts,
        device=device,
        num_workers=num_workers,
        profile=profile,
        train_annotations=train_annotations,
        val_annotations=val_annotations,
        train_images=train_images,
        val_images=val_images,
    )
    run_guarded(lambda: run_env_check(options))


@app.command()
def memprofile(
    profile: str = typer.Option("detr-r50", help="Profile name or TOML path."),
    batch_sizes: str = typer.Option("1,2,4,8", help="Comma-separated batch sizes."),
    amp: str = typer.Option("both", help="both, off, bf16 or fp16."),
    shape: str = typer.Option("worst", help="worst, HxW or dataset."),
    find_max: bool = typer.Option(False, "--find-max", help="Search the largest batch size that fits, per AMP mode."),
    device: str = typer.Option("auto", help="auto, cuda[:N] or cpu."),
    estimate: bool = typer.Option(
        False, "--estimate", help="Estimate without allocating (also alongside a GPU measurement)."
    ),
    gpu_memory: str | None = typer.Option(
        None, help="Device memory to plan for: a size (24GiB) or a GPU name (A100-80GB)."
    ),
    snapshot: bool = typer.Option(
        False, "--snapshot", help="Write a CUDA memory snapshot of the largest fitting point."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
    output_dir: str | None = typer.Option(None, help="Also write CSV (and the snapshot) here."),
    coco_path: str | None = typer.Option(None, "--data", "--coco-path", help="Dataset for --shape dataset."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Measure every point in this process instead of a fresh one."
    ),
    safety_margin: float = typer.Option(0.1, help="Share of device memory kept free when judging what fits."),
) -> None:
    """GPU memory and speed across batch sizes, with and without AMP (estimated without a GPU)."""
    from detrdoctor.commands.memprofile import MemprofileOptions, run_memprofile

    options = MemprofileOptions(
        profile=profile,
        batch_sizes=batch_sizes,
        amp=amp,
        shape=shape,
        find_max=find_max,
        device=device,
        estimate=estimate,
        gpu_memory=gpu_memory,
        snapshot=snapshot,
        json_output=json_output,
        output_dir=output_dir,
        coco_path=coco_path,
        in_process=in_process,
        safety_margin=safety_margin,
    )
    run_guarded(lambda: run_memprofile(options))


@app.command("loader-bench")
def loader_bench(
    profile: str = typer.Option("demo", help="Profile name or TOML path."),
    coco_path: str | None = typer.Option(
        None, "--data", "--coco-path", help="COCO-format dataset root (default: the profile's data)."
    ),
    split: str = typer.Option("train", help="train or val."),
    num_workers: str = typer.Option("auto", help="Comma-separated worker counts, or auto."),
    pin_memory: str = typer.Option("both", help="both, on or off."),
    batch_size: int | None = typer.Option(None, help="Images per batch (default: the profile's)."),
    batches: int = typer.Option(30, help="Batches to time per setting."),
    prefetch_factor: int | None = typer.Option(None, help="DataLoader prefetch_factor."),
    persistent_workers: bool = typer.Option(False, "--persistent-workers", help="Keep workers between epochs."),
    step_time: str = typer.Option("auto", help="auto (measure the model), SECONDS, or none."),
    json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
    train_annotations: str | None = typer.Option(None, help=TRAIN_ANNOTATIONS_HELP),
    val_annotations: str | None = typer.Option(None, help=VAL_ANNOTATIONS_HELP),
    train_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Training")),
    val_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Validation")),
) -> None:
    """DataLoader throughput per num_workers and pin_memory, with a verdict on GPU starvation."""
    from detrdoctor.commands.loader_bench import LoaderBenchOptions, run_loader_bench

    options = LoaderBenchOptions(
        profile=profile,
        coco_path=coco_path,
        split=split,
        num_workers=num_workers,
        pin_memory=pin_memory,
        batch_size=batch_size,
        batches=batches,
        prefetch_factor=prefetch_factor,
        persistent_workers=persistent_workers,
        step_time=step_time,
        json_output=json_output,
        train_annotations=train_annotations,
        val_annotations=val_annotations,
        train_images=train_images,
        val_images=val_images,
    )
    run_guarded(lambda: run_loader_bench(options))


@app.command()
def triage(
    profile: str | None = typer.Option(
        None,
        help="Profile name or TOML path (default: demo, or detr-r50 with --coco-path; with --run: the run's config).",
    ),
    coco_path: str | None = typer.Option(
        None,
        "--data",
        "--coco-path",
        help="Dataset root, any layout env-check recognises (default: the synthetic dataset).",
    ),
    weights: str | None = typer.Option(
        None, help="Start the overfit test from these weights (path or URL) instead of a fresh model."
    ),
    run: str | None = typer.Option(
        None, help="Also judge a run folder's metrics.jsonl (alone: with that run's config.toml)."
    ),
    images: int = typer.Option(4, help="Training images the overfit test must memorise."),
    steps: int = typer.Option(200, help="Steps of the overfit test (0 skips it)."),
    out: str | None = typer.Option(
        None, help="Folder for the drawn samples and the overfit run (default: triage-<timestamp>)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N for the overfit test."),
    amp: str | None = typer.Option(
        None, help="Mixed precision of the overfit test: off, bf16 or fp16 (default: the profile's)."
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print checks, summary, overfit numbers and artifacts as JSON."
    ),
    train_annotations: str | None = typer.Option(None, help=TRAIN_ANNOTATIONS_HELP),
    val_annotations: str | None = typer.Option(None, help=VAL_ANNOTATIONS_HELP),
    train_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Training")),
    val_images: str | None = typer.Option(None, help=IMAGES_HELP.format("Validation")),
) -> None:
    """Why doesn't my DETR learn? Data, schedule, an overfit test on a few images, drawn samples, a run's history."""
    from detrdoctor.commands.triage import TriageOptions, run_triage

    options = TriageOptions(
        profile=profile,
        coco_path=coco_path,
        weights=weights,
        run=run,
        images=images,
        steps=steps,
        out=out,
        device=device,
        amp=amp,
        json_output=json_output,
        train_annotations=train_annotations,
        val_annotations=val_annotations,
        train_images=train_images,
        val_images=val_images,
    )
    run_guarded(lambda: run_triage(options))


@app.command()
def stack(
    pid: int = typer.Argument(..., help="Process id of a running training process."),
    native: bool = typer.Option(False, help="Include native frames (py-spy --native)."),
) -> None:
    """Print the Python stacks of a running process and its DataLoader workers (py-spy)."""
    from detrdoctor.commands.stack import StackOptions, run_stack

    run_guarded(lambda: run_stack(StackOptions(pid=pid, native=native)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
