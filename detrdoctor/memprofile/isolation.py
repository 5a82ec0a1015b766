"""Each point in a fresh Python process, so that no point inherits another's allocator state, CUDA
context or fragmentation: a point measured alone and inside a sweep report the same memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from detrdoctor.memprofile.request import PointRequest, PointResult

MARKER = "memprofile-result "


def run_isolated(request: PointRequest) -> PointResult:
    """Measure `request` in a child process; a child that dies without a result is an "error" result."""
    # The child imports what this process can import (a test's helper modules included).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "detrdoctor.memprofile.isolation"],
        input=json.dumps(request.to_json()),
        capture_output=True,
        text=True,
        env=env,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return PointResult.from_json(json.loads(line.removeprefix(MARKER)))
    lines = proc.stderr.strip().splitlines()
    return PointResult(
        request.batch_size,
        request.amp,
        "error",
        "measured",
        error=lines[-1] if lines else f"measuring process exited with code {proc.returncode}",
    )


def main() -> None:
    from detrdoctor.memprofile.measure import measure_point

    request = PointRequest.from_json(json.load(sys.stdin))
    print(MARKER + json.dumps(measure_point(request, isolated=True).to_json()), flush=True)


if __name__ == "__main__":
    main()
