"""The command line's flags are a contract: every command's parameters, pinned in golden/cli_flags.json.

For each command the golden file lists its parameters in order: the flag names (every alias), whether it is an
argument, an option or an on/off flag, its default, its value type and, where Typer checks them, its choices and
range. A change shows as a diff of the JSON; after a deliberate one (a new flag, a range Typer now checks),
regenerate with `DETRDOCTOR_REGENERATE_GOLDEN=1 python -m pytest tests/unit/test_cli_contract.py` and commit it.
"""

from __future__ import annotations

import difflib
import enum
import json
import os
import typing
from pathlib import Path
from typing import Any

import typer.main
from typer.core import TyperArgument, TyperGroup, TyperOption

from detrdoctor.cli import app

GOLDEN = Path(__file__).parent / "golden" / "cli_flags.json"


def json_value(value: Any) -> Any:
    """A default as JSON: enums by value, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def type_name(annotation: Any) -> str:
    """The value type; a choice (Literal or Enum) is named by its values' type, so that making Typer check the
    choices only adds a "choices" key."""
    if typing.get_origin(annotation) is typing.Literal:
        return type(typing.get_args(annotation)[0]).__name__
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return type(next(iter(annotation)).value).__name__
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def describe_param(param: TyperArgument | TyperOption) -> dict[str, Any]:
    described: dict[str, Any]
    if isinstance(param, TyperArgument):
        described = {"argument": param.name, "kind": "argument", "nargs": param.nargs}
    else:
        described = {"flags": [*param.opts, *param.secondary_opts], "kind": "flag" if param.is_flag else "option"}
    described["default"] = json_value(param.default)
    described["required"] = param.required
    descriptor = param.type_descriptor
    described["type"] = type_name(descriptor.annotation)
    if descriptor.choices is not None:
        described["choices"] = [json_value(c) for c in descriptor.choices]
    for bound in ("min", "max"):
        if getattr(descriptor.parameter_info, bound) is not None:
            described[bound] = getattr(descriptor.parameter_info, bound)
    return described


def cli_contract() -> dict[str, list[dict[str, Any]]]:
    """Every command's parameters in their order, as the golden file holds them."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    contract = {}
    for name, command in sorted(group.commands.items()):
        params = command.params
        assert all(isinstance(p, (TyperArgument, TyperOption)) for p in params)
        contract[name] = [describe_param(p) for p in params]  # type: ignore[arg-type]
    return contract


def rendered(contract: dict[str, list[dict[str, Any]]]) -> str:
    """The golden file's text: one line per parameter, so that a diff names the flags that changed."""
    commands = [
        f"  {json.dumps(name)}: [\n" + ",\n".join(f"    {json.dumps(p, ensure_ascii=False)}" for p in params) + "\n  ]"
        for name, params in contract.items()
    ]
    return "{\n" + ",\n".join(commands) + "\n}\n"


def test_flags_defaults_and_types_are_unchanged() -> None:
    current = rendered(cli_contract())
    if os.environ.get("DETRDOCTOR_REGENERATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(current)
    golden = GOLDEN.read_text()
    diff = "".join(difflib.unified_diff(golden.splitlines(True), current.splitlines(True), "golden", "current"))
    assert not diff, f"the command line's flags changed (regenerate deliberately, see the docstring):\n{diff}"
