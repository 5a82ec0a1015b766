"""Two gloo ranks on localhost (as torchrun would start them): a killed or stopped peer is named by the
survivor, in one line, within the configured timeout; no gloo traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_a_lost_peer_is_named_by_the_survivor(tmp_path, fault):
    from detrdoctor.profiles import resolve_profile

    profile = tmp_path / "p.toml"
    profile.write_text(resolve_profile("tiny").read_text().replace("[train]\n", "[train]\ndist_timeout_s = 15.0\n"))
    port = free_port()
    ranks = []
    for rank in range(2):
        env = {**CHILD_ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        command = [sys.executable, "-m", "detrdoctor.cli", "train", "--profile", str(profile), "--no-dashboard"]
        command += ["--output-dir", str(tmp_path / "run"), "--stall-after", "0"]
        ranks.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    survivor, peer = ranks
    try:
        assert survivor.stdout is not None
        for line in survivor.stdout:
            if line.startswith("step 1/"):
                break
        else:
            raise AssertionError(survivor.stderr.read() if survivor.stderr else "no step line")
        peer.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        _, errors = survivor.communicate(timeout=300)
        assert survivor.returncode == 1, errors
        assert "Traceback" not in errors, errors
        lines = [line for line in errors.splitlines() if line.startswith("error:")]  # gloo may log warnings too
        assert len(lines) == 1, errors
        state = "gone" if fault == "killed" else "stopped"
        assert f"rank 1 (PID {peer.pid} on {socket.gethostname()}) is {state}" in lines[0]
        assert "dist_timeout_s = 15 s" in lines[0]
    finally:
        for child in ranks:
            if child.poll() is None:
                child.kill()
                child.wait()
