"""Distillation and pruning recovery under kill -9 (issue 26): `odyssey optimize distill|prune` killed
after a checkpoint, then run again with --resume, give the loss curve and the weights of an uninterrupted
run; the killed run records no candidate and no model (nothing half-made is taken as finished)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odyssey.training.checkpoint import STATE_JSON, latest_checkpoint
from tests.conftest import tiny_project

REPO = Path(__file__).resolve().parents[2]
STEPS = "20"  # the loop saves every max(10, steps // 4) = 10 steps: one checkpoint before the end
JOBS = {
    "distill": ["optimize", "distill", "--teacher", "tiny:llama", "--student-layers", "1", "--steps", STEPS],
    "prune": ["optimize", "prune", "--from", "tiny:llama", "--sparsity", "0.25", "--recover", STEPS],
}


def _command(root: Path, job: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "odyssey.cli", *JOBS[job], "--no-measure", "-p", str(root), *extra]


def _env() -> dict:
    return {**os.environ, "ODYSSEY_QUIET": "1"}


def _train_dirs(root: Path) -> list[Path]:
    """The loop's output folders of the optimize runs (distill: <work>/train, prune: <work>/recovery)."""
    return [p for p in (root / ".odyssey" / "optimize").glob("*/*") if p.name in ("train", "recovery")]


def _kill_after_a_checkpoint(root: Path, job: str) -> None:
    proc = subprocess.Popen(_command(root, job), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 240
    while not any(latest_checkpoint(d) for d in _train_dirs(root) if d.exists()):
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint in 4 minutes"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up handlers run, as after a crash or an OOM kill
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _run(root: Path, job: str, *extra: str) -> dict:
    proc = subprocess.run(
        _command(root, job, "--json", *extra), capture_output=True, text=True, env=_env(), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _curve_and_weights(root: Path, result: dict) -> tuple[list[float], dict]:
    from safetensors.torch import load_file

    (train_dir,) = _train_dirs(root)
    state = json.loads((latest_checkpoint(train_dir) / STATE_JSON).read_text())
    losses = [h["loss"] for h in state["history"] if "loss" in h]
    weights = load_file(str(Path(result["model_ref"]) / "model.safetensors"))
    return losses, weights


@pytest.mark.slow
@pytest.mark.parametrize("job", ["distill", "prune"])
def test_kill_9_then_resume_gives_the_uninterrupted_curve_and_weights(tmp_path, job):
    from odyssey.project import Project

    killed = tiny_project(tmp_path / "killed")
    _kill_after_a_checkpoint(killed, job)
    store = Project.load(killed).store
    assert not [c for c in store.candidates() if c["stage"] == "optimize"]  # nothing recorded as finished
    assert not list((killed / ".odyssey").rglob("model.safetensors.partial*"))
    resumed = _run(killed, job, "--resume")
    training = resumed["training"] if job == "distill" else resumed["recovery"]
    assert training["resumed_from"] is not None and training["steps"] == int(STEPS)

    whole = tiny_project(tmp_path / "whole")
    uninterrupted = _run(whole, job)
    assert resumed["candidate"] == uninterrupted["candidate"]
    got_losses, got_weights = _curve_and_weights(killed, resumed)
    want_losses, want_weights = _curve_and_weights(whole, uninterrupted)
    assert len(got_losses) == len(want_losses) > 2
    assert got_losses == pytest.approx(want_losses, abs=1e-6)
    assert got_weights.keys() == want_weights.keys()
    for name, tensor in want_weights.items():
        assert (got_weights[name] - tensor).abs().max().item() <= 1e-6, name
