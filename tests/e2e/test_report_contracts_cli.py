"""The JSON contracts only the CLI gives whole: triage's report and env-check re-judging a facts file."""

from __future__ import annotations

import json
from pathlib import Path

from golden import assert_golden, row_keys
from typer.testing import CliRunner

from detrdoctor.cli import app

FIXTURE = Path(__file__).parents[1] / "fixtures" / "envcheck" / "gpu_node_ok.json"


def test_triage_json(tmp_path: Path) -> None:
    args = ["triage", "--json", "--device", "cpu", "--profile", "tiny", "--images", "2", "--steps", "0"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "t")])
    report = json.loads(result.stdout)
    checks = report["checks"]
    assert_golden(
        "triage_cli",
        {
            "exit_code": result.exit_code,
            "top_level": list(report),
            "summary": list(report["summary"]),
            "artifacts": list(report["artifacts"]),
            "overfit": report["overfit"],  # None with --steps 0
            "check_keys": row_keys(checks),
            "ids": [c["id"] for c in checks],
            "sections": sorted({c["section"] for c in checks}),
        },
    )


def test_env_check_from_facts_json() -> None:
    result = CliRunner().invoke(app, ["env-check", "--json", "--from", str(FIXTURE)])
    report = json.loads(result.stdout)
    assert_golden(
        "env_check_cli",
        {
            "exit_code": result.exit_code,
            "top_level": list(report),
            "summary": list(report["summary"]),
            "check_keys": row_keys(report["checks"]),
            "ids": [c["id"] for c in report["checks"]],
        },
    )
