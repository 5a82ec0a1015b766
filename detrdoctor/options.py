"""Each flag written once: a command's options dataclass is its flags, and the flag → config key map is derived.

A command's flags are the fields of its options dataclass (`commands/train.py`'s TrainOptions, ...): a field
typed `Annotated[T, typer.Option(...)]` is a flag, its default the flag's default. `command(run_<command>)` gives
Typer a callback whose parameters are those fields, so the field is the only place a flag is declared, and the
command body receives the typed dataclass. Fields without a Typer annotation are not flags (a test hook).

A flag that sets a RunConfig key carries `CONFIG` (or a `ConfigKey`) in its Annotated metadata: the key is the
field's name, its section is found by walking `detr.config.RunConfig` (`SECTION_OF`), so no command keeps a
table of which flag goes where; `config_overrides()` reads the flags given. A field naming no RunConfig key
fails when the command is registered, i.e. on `import detrdoctor.cli`.

The flags several commands share are declared below once (profile, --data/--coco-path, the four data-layout
flags, device, batch size, workers, AMP, weights, --json). Flags with one name but another meaning per command
(--out, --output-dir, --seed, --threshold) are each declared by their command: sharing their declaration would
share a help text that is wrong for all but one.

Nothing here imports torch: `detrdoctor --help` builds every command from these declarations.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_type_hints

import typer
from typer.models import ParameterInfo

from detr.config import RunConfig


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


# ---------------------------------------------------------------- flag → RunConfig key


@dataclass(frozen=True)
class ConfigKey:
    """Annotated metadata of a flag that sets the RunConfig key of its field's name when given (None: not given).

    An on/off flag that is off by default sets `when_on` when it is on; `parse` turns the flag's text into the
    key's value where the two types differ (`--batch-size N|auto`).
    """

    when_on: bool = True
    parse: Callable[[Any], Any] | None = None


CONFIG = ConfigKey()

# Every RunConfig key → its section ("epochs" → "train"); key names are unique across the sections.
SECTION_OF = {
    key.name: section
    for section, values in vars(RunConfig()).items()
    if dataclasses.is_dataclass(values)
    for key in dataclasses.fields(values)
}


def config_fields(options_type: type) -> tuple[tuple[str, str, ConfigKey], ...]:
    """(field, section, marker) for each flag of `options_type` that sets a RunConfig key."""
    hints = get_type_hints(options_type, include_extras=True)
    found = []
    for f in dataclasses.fields(options_type):
        marker = next((m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, ConfigKey)), None)
        if marker is not None:
            if f.name not in SECTION_OF:
                raise TypeError(f"{options_type.__name__}.{f.name} is marked CONFIG but RunConfig has no such key")
            found.append((f.name, SECTION_OF[f.name], marker))
    return tuple(found)


def config_overrides(options: Any) -> dict[str, dict[str, Any]]:
    """The RunConfig keys the given flags set, per section: {"train": {"epochs": 3}, ...}."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, section, marker in config_fields(type(options)):
        value = getattr(options, name)
        if isinstance(value, bool):  # an on/off flag: off is "not given"
            value = marker.when_on if value else None
        if value is None:
            continue
        overrides.setdefault(section, {})[name] = marker.parse(value) if marker.parse else value
    return overrides


# ---------------------------------------------------------------- options dataclass → Typer callback


def flag_fields(options_type: type) -> list[inspect.Parameter]:
    """The fields typed with a typer.Option or typer.Argument, as the keyword parameters Typer reads."""
    hints = get_type_hints(options_type, include_extras=True)
    return [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=hints[f.name],
        )
        for f in dataclasses.fields(options_type)
        if any(isinstance(m, ParameterInfo) for m in getattr(hints[f.name], "__metadata__", ()))
    ]


def command(run: Callable[[Any], int]) -> Callable[..., None]:
    """The Typer callback of `run_<command>(options: <Command>Options)`: its parameters are the flags of the
    options dataclass, its help `run`'s docstring; it builds the options and runs the command under
    `run_guarded`."""
    options_type = get_type_hints(run)["options"]
    config_fields(options_type)  # a CONFIG flag that names no RunConfig key fails here, at registration

    def callback(**flags: Any) -> None:
        run_guarded(lambda: run(options_type(**flags)))

    callback.__signature__ = inspect.Signature(flag_fields(options_type))  # type: ignore[attr-defined]
    paragraphs = inspect.cleandoc(run.__doc__ or "").split("\n\n")
    callback.__doc__ = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)  # Typer keeps line breaks
    return callback


def command_name(run: Callable[..., int]) -> str:
    """`run_loader_bench` → "loader-bench"."""
    return run.__name__.removeprefix("run_").replace("_", "-")


# ---------------------------------------------------------------- the flags several commands share


def profile_flag(default: str = "") -> Any:
    """--profile, with what the command starts from when it is not given."""
    return typer.Option(help=f"Profile name or TOML path{f' (default: {default})' if default else ''}.")


def data_flag(help: str = "Dataset root, any layout env-check recognises (default: the synthetic dataset).") -> Any:
    """--data/--coco-path: the dataset root ([data] coco_path)."""
    return typer.Option("--data", "--coco-path", help=help)


ANNOTATIONS_HELP = (
    "Training annotation file (COCO JSON; relative: under --coco-path). Default: found in "
    "--coco-path (COCO, Roboflow, CVAT and Label Studio layouts)."
)
IMAGES_HELP = "{} image folder (relative: under --coco-path; default: found with the annotations)."
VAL_ANNOTATIONS_HELP = (
    "Validation annotation file (default: found in --coco-path; a single-file export holds out "
    "\\[data] val_fraction of its images)."
)

Profile = Annotated[str | None, profile_flag("demo, or detr-r50 with --coco-path")]
DataRoot = Annotated[str | None, data_flag(), CONFIG]
TrainAnnotations = Annotated[str | None, typer.Option(help=ANNOTATIONS_HELP), CONFIG]
ValAnnotations = Annotated[str | None, typer.Option(help=VAL_ANNOTATIONS_HELP), CONFIG]
TrainImages = Annotated[str | None, typer.Option(help=IMAGES_HELP.format("Training")), CONFIG]
ValImages = Annotated[str | None, typer.Option(help=IMAGES_HELP.format("Validation")), CONFIG]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N."), CONFIG]
BatchSize = Annotated[
    int | None, typer.Option(help="Images per batch (default: the profile's or the checkpoint's)."), CONFIG
]
NumWorkers = Annotated[int | None, typer.Option(help="DataLoader worker processes."), CONFIG]
Amp = Annotated[str | None, typer.Option(help="Mixed precision: off, bf16 or fp16."), CONFIG]
Weights = Annotated[str, typer.Option(help="Checkpoint: a file, URL or run folder (ours or official).")]
Json = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
Split = Literal["train", "val"]
