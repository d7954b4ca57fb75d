"""``odyssey run`` end to end on tiny:llama through every stage of the default pipeline (scope, prompt,
finetune, align = preferences + DPO, optimize = int8, evaluate): killed with SIGKILL mid-stage, started
again, it skips the finished steps, resumes the killed one, and ends with the board an uninterrupted run
gives."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from odyssey.pipeline.names import PROFILES
from odyssey.project import Project
from tests.conftest import tiny_project

# The quick profile, with a fine-tune long enough to be killed in (a checkpoint every 2 of 12 steps).
TINY = copy.deepcopy(PROFILES["quick"])
TINY["adapt"].update({"max_steps": 12, "save_every": 2})


def _project(root: Path) -> Path:
    tiny_project(root)
    spec = (root / "odyssey.yaml").read_text().replace("max_new_tokens: 60", "max_new_tokens: 8")
    (root / "odyssey.yaml").write_text(spec + yaml.safe_dump({"profiles": {"tiny": TINY}}))
    return root


def _env() -> dict:
    # the code version is pinned: another commit between the two runs must not invalidate the cache
    return {**os.environ, "ODYSSEY_CODE_VERSION": "pipeline-test", "ODYSSEY_QUIET": "1"}


def _command(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "odyssey.cli", "run", "-p", str(root), "--profile", "tiny", *extra]


def _run_json(root: Path) -> dict:
    proc = subprocess.run(_command(root, "--json"), capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _mid_stage(root: Path) -> bool:
    """The fine-tune has written a checkpoint, or a later stage (align) has begun. Read from the files, not
    the database: the test must not race the run for the store's first rows."""
    from odyssey.training import latest_checkpoint

    state = root / ".odyssey"
    if (state / "align").exists():
        return True
    return (
        any(latest_checkpoint(d / "train") for d in (state / "adapt").glob("*") if d.is_dir())
        if (state / "adapt").exists()
        else False
    )


def _kill_mid_stage(root: Path) -> None:
    proc = subprocess.Popen(_command(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 600
    while not _mid_stage(root):
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no stage got under way in 10 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _candidates(board: dict) -> set[tuple]:
    return {(c["name"], c["stage"], c["parent"]) for c in board["candidates"]}


def test_kill_9_then_resume_gives_the_uninterrupted_board(tmp_path):
    from odyssey.store.pipeline import step_records

    killed_root = _project(tmp_path / "killed")
    _kill_mid_stage(killed_root)
    records = step_records(Project.load(killed_root).store)
    finished = [r["step"] for r in records if r["status"] == "succeeded"]
    running = [r["step"] for r in records if r["status"] == "running"]
    assert len(running) == 1 and {"scope", "prompt"} <= set(finished), records
    killed = running[0]

    resumed = _run_json(killed_root)
    status = {s["step"]: s["status"] for s in resumed["steps"]}
    assert all(status[step] == "cached" for step in finished), status
    assert status[killed] == "resumed", status
    later = [s["step"] for s in resumed["steps"]][[s["step"] for s in resumed["steps"]].index(killed) + 1 :]
    assert later and all(status[step] == "ran" for step in later), status
    assert set(status) == {
        "scope",
        "prompt",
        "finetune",
        "align.preferences",
        "align.dpo",
        "optimize.quantize-int8",
        "evaluate",
    }
    if killed == "finetune":  # killed after a checkpoint: the fine-tune went on from it
        from odyssey.store.pipeline import latest_step

        outcome = latest_step(Project.load(killed_root).store, "finetune", status="succeeded")["outcome"]
        assert outcome["extra"]["resumed_from"] is not None

    whole_root = _project(tmp_path / "whole")
    whole = _run_json(whole_root)
    assert {s["status"] for s in whole["steps"]} == {"ran"}
    again = _run_json(whole_root)  # nothing changed: nothing runs, the board stays
    assert {s["status"] for s in again["steps"]} == {"cached"} and again["board"]["best"] == whole["board"]["best"]
    assert _candidates(resumed["board"]) == _candidates(whole["board"])
    assert resumed["board"]["best"] == whole["board"]["best"]
    assert {g["candidate"] for g in resumed["gains"]} == {g["candidate"] for g in whole["gains"]} != set()
    report = killed_root / ".odyssey" / "pipeline" / "report.md"
    assert "## What each stage bought" in report.read_text() and (report.parent / "board.png").exists()


def test_ppo_distill_and_prune_steps(tmp_path):
    """The other sub-stages through the table: align by PPO (preferences, reward model, PPO) and optimize by
    distillation and pruning, from named parents, with `with:` overrides."""
    root = _project(tmp_path / "p")
    (root / "odyssey.yaml").write_text(
        (root / "odyssey.yaml").read_text()
        + """pipeline:
  - {stage: prompt}
  - {stage: finetune}
  - {stage: align, with: {method: ppo}}
  - {stage: optimize, parent: finetune, with: {methods: [distill, prune], measure: false}}
  - {stage: evaluate}
"""
    )
    result = _run_json(root)
    assert [(s["step"], s["status"]) for s in result["steps"]] == [
        ("prompt", "ran"),
        ("finetune", "ran"),
        ("align.preferences", "ran"),
        ("align.reward", "ran"),
        ("align.ppo", "ran"),
        ("optimize.distill", "ran"),
        ("optimize.prune", "ran"),
        ("evaluate", "ran"),
    ]
    parents = {c["name"]: c["parent"] for c in result["board"]["candidates"]}
    made = {s["step"]: s["candidates"] for s in result["steps"]}
    lora = made["finetune"][0]
    assert parents[made["align.ppo"][0]] == lora
    assert parents[made["optimize.distill"][0]] == lora and parents[made["optimize.prune"][0]] == lora
    gains = {g["stage"]: g for g in result["gains"]}
    assert set(gains) - {"whole run"} == {"prompt", "finetune", "ppo", "distill", "prune"}
    best = result["board"]["best"]
    if best not in (made["prompt"][0], gains["prompt"]["parent"]):  # else the prompt row is already that gain
        whole = gains["whole run"]  # the best candidate over its model zero-shot, on the same test rows
        assert whole["candidate"] == best and whole["parent"] == gains["prompt"]["parent"]
        assert whole["n"] == gains["prompt"]["n"] and whole["low"] <= whole["gain"] <= whole["high"]
