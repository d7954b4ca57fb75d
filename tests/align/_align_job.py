"""An align training run in a subprocess, for the kill -9 resume tests (tests/align/test_preference_methods.py).

usage: python _align_job.py PROJECT_DIR METHOD [--resume] [--hang-at STEP]
METHOD: dpo | kto | orpo | simpo | reward. Makes the tiny project and its preference pairs when PROJECT_DIR
has none, trains through the public entry function, and writes PROJECT_DIR/result.json with the loss
history of the run. --hang-at: print READY once step STEP is logged and wait to be killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TOPICS = ["the bus", "lunch", "the report", "a meeting", "the weather", "a movie", "the bill", "my keys"]
SETTINGS = "{epochs: 2, learning_rate: 0.003, batch_size: 2, save_every: 2}"


def make_project(root: Path):
    from odyssey.align.preferences import build_preferences
    from odyssey.project import Project
    from tests.conftest import tiny_project

    tiny_project(root)
    rows = [
        {"prompt": f"Tell me about {t}.\n", "chosen": f"Happy to help with {t}.", "rejected": f"Shut up, {t} is crap."}
        for t in TOPICS
    ]
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = (root / "odyssey.yaml").read_text()
    spec += f"align:\n  dpo: {SETTINGS}\n  kto: {SETTINGS}\n  orpo: {SETTINGS}\n  simpo: {SETTINGS}\n"
    spec += "  reward: {epochs: 2, learning_rate: 0.003, batch_size: 2, save_every: 2, held_out: 0.25}\n"
    (root / "odyssey.yaml").write_text(spec)
    build_preferences(Project.load(root), sources=[{"kind": "file", "path": "prefs.jsonl"}])


def hang_after(step: int):
    """Wrap the loop so that the run stops, alive, once ``step`` is logged (the test then kills it)."""
    import odyssey.training as training

    real = training.train

    def train(*args, on_log=None, **kwargs):
        def log(entry):
            if on_log is not None:
                on_log(entry)
            if entry.get("step") == step and "loss" in entry:
                print("READY", file=sys.__stdout__, flush=True)  # the align entry points send stdout to stderr
                time.sleep(600)

        return real(*args, on_log=log, **kwargs)

    training.train = train


def main():
    import torch

    torch.set_num_threads(1)  # bit-identical CPU matmuls between runs
    root, method = Path(sys.argv[1]), sys.argv[2]
    resume = "--resume" in sys.argv
    if not (root / "odyssey.yaml").exists():
        make_project(root)
    if "--hang-at" in sys.argv:
        hang_after(int(sys.argv[sys.argv.index("--hang-at") + 1]))
    from odyssey.project import Project

    project = Project.load(root)
    if method == "reward":
        from odyssey.align.reward import train_reward_model

        run_id = train_reward_model(project, resume=resume).run_id
    else:
        from odyssey.align.dpo import train_preference

        run_id = train_preference(project, method, resume=resume, evaluate=False).run_id
    summary = project.store.get_run(run_id)["summary"]
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    (root / "result.json").write_text(
        json.dumps({"losses": losses, "steps": summary["steps"], "resumed_from": summary["resumed_from"]})
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
