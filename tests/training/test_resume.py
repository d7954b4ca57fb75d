"""Kill -9 a training run mid-way, resume it, and get the loss curve of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import kill_9_at_ready

JOB = Path(__file__).with_name("_job.py")


def _env(lora: bool = False):
    env = dict(os.environ)
    env.pop("JOB_LORA", None)
    if lora:
        env["JOB_LORA"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _run(out: Path, *args: str, lora: bool = False):
    subprocess.run(
        [sys.executable, str(JOB), str(out), *args], check=True, env=_env(lora), timeout=300, stdout=subprocess.DEVNULL
    )
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-with-dropout"])
def test_kill_9_then_resume_gives_the_uninterrupted_loss_curve(tmp_path, lora):
    straight = _run(tmp_path / "straight", lora=lora)

    interrupted = tmp_path / "interrupted"
    kill_9_at_ready([sys.executable, str(JOB), str(interrupted), "--hang-at", "5"], _env(lora))
    assert not (interrupted / "result.json").exists()
    assert sorted(p.name for p in (interrupted / "checkpoints").iterdir()) == ["step-3"]

    resumed = _run(interrupted, "--resume", lora=lora)
    assert resumed["resumed_from"] == 3
    assert resumed["steps"] == straight["steps"] == 9
    assert resumed["tokens"] == straight["tokens"]
    assert len(resumed["losses"]) == len(straight["losses"]) == 9
    assert resumed["losses"] == pytest.approx(straight["losses"], abs=1e-6)
    assert resumed["checksum"] == pytest.approx(straight["checksum"], rel=1e-9)
    # a changed learning curve is visible: the curve is not flat, so equality above means something
    assert max(straight["losses"]) - min(straight["losses"]) > 0.05


@pytest.mark.slow
def test_multi_process_ddp_matches_single_process(tmp_path):
    """2 CPU processes with gloo under torchrun, each on half of every batch, match one process."""
    single = _run(tmp_path / "single")
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    env = _env()
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29571", str(JOB), str(tmp_path / "ddp")],
        check=True,
        env=env,
        timeout=300,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["steps"] == single["steps"]
    assert ddp["tokens"] == single["tokens"]  # tokens summed over both processes
    assert ddp["losses"] == pytest.approx(single["losses"], abs=2e-3)
    assert ddp["checksum"] == pytest.approx(single["checksum"], rel=1e-4)
