"""`detrdoctor profiles`: the named presets, one line each."""

from __future__ import annotations

import json
from dataclasses import dataclass

from detrdoctor.options import Json


@dataclass(frozen=True, kw_only=True)
class ProfilesOptions:
    """The flags of `profiles`."""

    json_output: Json = False


def run_profiles(options: ProfilesOptions) -> int:
    """List the named presets."""
    from rich.console import Console
    from rich.table import Table

    from detrdoctor.profiles import available_profiles, profile_summaries

    summaries = profile_summaries()
    if options.json_output:
        paths = available_profiles()
        print(json.dumps([{"name": n, "description": d, "path": str(paths[n])} for n, d in summaries.items()]))
        return 0
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("profile", style="cyan", no_wrap=True)
    table.add_column("description")
    for name, description in summaries.items():
        table.add_row(name, description)
    Console().print(table)
    return 0
