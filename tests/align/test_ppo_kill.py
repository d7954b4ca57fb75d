"""PPO under kill -9 (issue 26): `odyssey align ppo` killed after a checkpoint, then run again with
--resume, gives the history (rewards, KL, losses per step) and the merged weights of an uninterrupted
run; the killed run records no aligned candidate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odyssey.training.checkpoint import latest_checkpoint, step_of
from tests.conftest import tiny_project

STEPS = "4"
PPO = "align:\n  ppo: {batch_size: 2, mini_batch_size: 2, ppo_epochs: 1, max_new_tokens: 6, checkpoint_every: 1}\n"


def _project(root: Path) -> Path:
    tiny_project(root)
    (root / "odyssey.yaml").write_text((root / "odyssey.yaml").read_text() + PPO)
    return root


def _command(root: Path, *extra: str) -> list[str]:
    args = ["align", "ppo", "--reward", "toxicity", "--steps", STEPS, "--no-eval", "-p", str(root), *extra]
    return [sys.executable, "-m", "odyssey.cli", *args]


def _env() -> dict:
    return {**os.environ, "ODYSSEY_QUIET": "1"}


def _checkpoint_step(root: Path) -> int:
    """The step of PPO's newest checkpoint, found as the training loop finds its own (one format)."""
    for work in (root / ".odyssey" / "align").glob("ppo-*"):
        folder = latest_checkpoint(work)
        if folder is not None:
            return step_of(folder)
    return 0


def _run(root: Path, *extra: str) -> dict:
    proc = subprocess.run(_command(root, "--json", *extra), capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _weights(result: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(result["model_path"]) / "model.safetensors"))


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_history_and_weights(tmp_path):
    from odyssey.project import Project

    killed = _project(tmp_path / "killed")
    proc = subprocess.Popen(_command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 300
    while _checkpoint_step(killed) < 2:
        assert proc.poll() is None, f"PPO ended before its second checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint in 5 minutes"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up handlers run, as after a crash or an OOM kill
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not [c for c in Project.load(killed).store.candidates() if c["stage"] == "align"]

    resumed = _run(killed, "--resume")
    whole = _run(_project(tmp_path / "whole"))
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in whole["history"]] == [1, 2, 3, 4]
    for got, want in zip(resumed["history"], whole["history"]):
        numbers = {k: v for k, v in want.items() if isinstance(v, float)}
        assert {k: got[k] for k in numbers} == pytest.approx(numbers, abs=1e-6), got["step"]
    got_w, want_w = _weights(resumed), _weights(whole)
    assert got_w.keys() == want_w.keys()
    for name, tensor in want_w.items():
        assert (got_w[name] - tensor).abs().max().item() <= 1e-6, name
