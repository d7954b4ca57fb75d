"""The whole lifecycle at full size on DialogSum: ``odyssey run --profile full``, killed mid-stage and resumed.

    nice flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/lifecycle.py --workdir /work/runs/lifecycle
    .venv/bin/python benchmarks/lifecycle.py --dry-run          # the plan and the planner's estimate, seconds
    .venv/bin/python benchmarks/lifecycle.py --model tiny:llama --profile smoke --out /tmp/lifecycle-smoke.json

Data: ../shared/data/dialogsum/dialogsum.dev.jsonl (not shipped), split as benchmarks/align_dialogsum.py splits
it, no shuffling: rows 0-349 train, 350-399 validation, 400-499 test. The project is that benchmark's at its
full size (reward model, PPO with a KL leash, DPO) plus a ``pipeline:`` of every stage (below). The profile
``full`` (odyssey/pipeline/names.py) sets the sizes: prompt search on 50 validation rows, 2 epochs with early
stopping, 300 preference prompts, 16 PPO prompts a step, every comparison on all 100 test rows.

The check of resume (``resume_ok``): the run is started, killed with SIGKILL while the ``--kill-at`` step
(default: the full fine-tune) is running and has written a new checkpoint, and started again. It holds when
every step finished before the kill is cached (not repeated), the killed step is resumed, and a killed
fine-tune went on from its checkpoint. That the resumed board equals an uninterrupted run's is what
tests/pipeline/test_run.py proves on a tiny model; at full size it would double an hours-long run.

Writes benchmarks/results/lifecycle.json (--out) and copies the run's report and plots to
benchmarks/results/lifecycle/ (--report-dir). Each figure the issue names is computed from the one store.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.align_dialogsum import SIZES, make_project  # noqa: E402  (the align benchmark's project)

# Every stage, and each optimization from the best fine-tune (not from an aligned candidate that may score
# higher): the list of steps at full size.
PIPELINE = """\
  - {stage: scope}
  - {stage: prompt}
  - {stage: finetune, name: lora, with: {method: lora}}
  - {stage: finetune, name: full, with: {method: full}}
  - {stage: finetune, name: prompt-tuning, with: {method: prompt_tuning}}
  - {stage: preferences, parent: "best:finetune"}
  - {stage: reward, parent: "best:finetune"}
  - {stage: ppo, parent: "best:finetune"}
  - {stage: dpo, parent: "best:finetune"}
  - {stage: quantize, name: int8, parent: "best:finetune", with: {to: int8}}
  - {stage: quantize, name: gguf-q8_0, parent: "best:finetune", with: {to: "gguf:q8_0"}}
  - {stage: quantize, name: gguf-q4_k_m, parent: "best:finetune", with: {to: "gguf:q4_k_m"}}
  - {stage: distill, parent: "best:finetune"}
  - {stage: prune, parent: "best:finetune"}
  - {stage: evaluate}
""".splitlines()
FINETUNES = ("lora", "full", "prompt-tuning")
METRICS = ("rouge1", "rouge2", "rougeL")


def smoke_profile() -> dict:
    """The quick profile with fine-tunes long enough to be killed in (a checkpoint every 2 of 12 steps)."""
    from odyssey.pipeline.names import PROFILES

    smoke = copy.deepcopy(PROFILES["quick"])
    smoke["adapt"].update({"max_steps": 12, "save_every": 2})
    smoke["align"]["ppo"].update({"steps": 2, "checkpoint_every": 1})
    smoke["optimize"]["quantize"]["to"] = ["int8"]
    return smoke


def build_project(root: Path, args) -> None:
    import yaml

    make_project(root, Path(args.data), SIZES["full"], args.model, args.batch)
    spec = (root / "odyssey.yaml").read_text()
    # 8 pairs a step at 640 tokens: the planner puts the reward model at 32 GB and DPO at 31 GB, and DPO
    # was OOM-killed at 24 GB here (benchmarks/results/align_methods_full_attempt.json). The same 8-pair
    # steps in two micro-batches of 4 fit (about 16-17 GB).
    for section in ("reward", "dpo"):
        line = next(x for x in spec.splitlines() if x.startswith(f"  {section}: "))
        spec = spec.replace(line, line.replace("batch_size: 8", "batch_size: 8, grad_accum: 2"))
    steps = PIPELINE
    if args.profile == "smoke":  # a tiny random model has no GGUF conversion worth timing
        steps = [s for s in PIPELINE if "name: gguf-" not in s]
        spec += yaml.safe_dump({"profiles": {"smoke": smoke_profile()}})
    spec += "pipeline:\n" + "".join(f"{s}\n" for s in steps)
    (root / "odyssey.yaml").write_text(spec)


def _env() -> dict:
    # The code version is pinned: a commit between the two attempts must not invalidate the cache.
    return {**os.environ, "ODYSSEY_CODE_VERSION": "lifecycle-benchmark", "ODYSSEY_QUIET": "1"}


def _command(root: Path, profile: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "odyssey.cli", "run", "-p", str(root), "--profile", profile, *extra]


def _checkpoints(root: Path) -> dict[str, str | None]:
    """Every training folder under the project's state and its newest complete checkpoint."""
    from odyssey.training import latest_checkpoint

    found = {}
    for folder in (root / ".odyssey").rglob("checkpoints"):
        latest = latest_checkpoint(folder.parent)
        found[str(folder.parent)] = str(latest) if latest else None
    return found


def _running_step(project) -> str | None:
    from odyssey.store.pipeline import running_steps

    running = running_steps(project.store)
    return running[-1]["step"] if running else None


def attempt_killed(root: Path, profile: str, kill_at: str, log) -> dict:
    """Start the run and SIGKILL it once ``kill_at`` is running and a checkpoint newer than the ones present
    when it started has appeared; a run that ends first is reported as not killed (resume_ok false)."""
    started = time.perf_counter()
    proc = subprocess.Popen(_command(root, profile), stdout=log, stderr=subprocess.STDOUT, env=_env())
    from odyssey.project import Project

    before, target_seen, project = None, None, None
    while proc.poll() is None:
        time.sleep(0.2)
        if project is None and (root / ".odyssey").exists():
            project = Project.load(root)  # once: the run has made the store
        if before is None:
            if project is not None and _running_step(project) == kill_at:
                before, target_seen = _checkpoints(root), time.perf_counter()
                print(f"[lifecycle] {kill_at} is running; waiting for its first new checkpoint", flush=True)
            continue
        if _checkpoints(root) != before:
            time.sleep(1.0)  # let the checkpoint's writer move on to the next training step
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            project.store.close()
            wall = time.perf_counter() - started
            print(f"[lifecycle] killed during {kill_at} after {wall:.0f} s", flush=True)
            return {
                "killed": True,
                "step": kill_at,
                "wall_s": wall,
                "waited_in_step_s": time.perf_counter() - target_seen,
            }
    return {"killed": False, "step": kill_at, "wall_s": time.perf_counter() - started, "returncode": proc.returncode}


def attempt_to_the_end(root: Path, profile: str, log) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run(_command(root, profile, "--json"), stdout=subprocess.PIPE, stderr=log, text=True, env=_env())
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"odyssey run failed (rc {proc.returncode}); see {log.name}")
    return json.loads(proc.stdout[proc.stdout.index("{") :]), wall


def _seconds_between(start: str, end: str | None) -> float | None:
    if not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def step_walls(records: list[dict]) -> dict[str, dict]:
    """Per step: its wall time in each attempt (a killed attempt's share up to the kill) and the sum."""
    walls: dict[str, dict] = {}
    for r in records:
        spent = r["wall_s"]
        if spent is None and r["status"] == "interrupted":  # marked when the second attempt began
            spent = _seconds_between(r["started_at"], r["finished_at"])
        entry = walls.setdefault(r["step"], {"stage": r["stage"], "attempts": []})
        entry["attempts"].append({"status": r["status"], "wall_s": spent, "resumed": bool(r["resumed"])})
    for entry in walls.values():
        entry["wall_s"] = round(sum(a["wall_s"] or 0.0 for a in entry["attempts"]), 1)
    return walls


def scores_with_ci(per_example: dict[str, float]) -> dict:
    from odyssey.align.common import bootstrap_ci

    values = list(per_example.values())
    low, high = bootstrap_ci([0.0] * len(values), values)  # the mean's own 95 % interval
    return {"mean": statistics.fmean(values), "low": low, "high": high, "n": len(values)}


def candidate_scores(project, evaluations: dict[str, int]) -> dict[str, dict]:
    from odyssey.pipeline.report import per_example

    return {
        name: {m: scores_with_ci(per_example(project.store, run_id, name, m)) for m in METRICS}
        for name, run_id in evaluations.items()
    }


def paired_points(project, evaluations, child: str, parent: str, metric: str) -> dict | None:
    """child - parent on ``metric`` in points, with the paired bootstrap 95 % interval (the report's gain)."""
    from odyssey.pipeline.report import gain, per_example

    if child not in evaluations or parent not in evaluations:
        return None
    found = gain(
        per_example(project.store, evaluations[child], child, metric),
        per_example(project.store, evaluations[parent], parent, metric),
    )
    return {k: (100 * v if k in {"gain", "low", "high"} else v) for k, v in found.items()} if found else None


def figures(project, result: dict, scores: dict, evaluations: dict) -> dict:
    from odyssey.align.evaluation import evaluate_aligned

    made = {s["step"]: s["candidates"] for s in result["steps"]}
    parents = {c["name"]: c["parent"] for c in result["board"]["candidates"]}
    first = {step: (names[-1] if names else None) for step, names in made.items()}
    fts = [first[s] for s in FINETUNES if first.get(s) in scores]
    best_ft = max(fts, key=lambda n: scores[n]["rouge1"]["mean"]) if fts else None
    out: dict = {"best_finetune": best_ft, "prompt_candidate": first.get("prompt")}
    out["ft_gain_rouge1"] = paired_points(project, evaluations, best_ft, first.get("prompt"), "rouge1")
    out["lora_vs_full_rouge1"] = paired_points(project, evaluations, first.get("full"), first.get("lora"), "rouge1")
    for method in ("ppo", "dpo"):
        cand = first.get(method)
        if cand and parents.get(cand):
            report = evaluate_aligned(project, cand, parents[cand], split="test", limit=None)
            m = report["metrics"]
            out[f"{method}_win_rate"] = m.get("win_rate")
            out[f"{method}_win_rate_ci"] = [m.get("win_rate_ci_low"), m.get("win_rate_ci_high")]
            out[f"{method}_rougeL_drop"] = -m["rougeL_change"] if "rougeL_change" in m else None
            out[f"{method}_kl"] = m.get("kl")
            out[f"{method}_reward_model"] = report.get("reward_model")
    for step in ("int8", "gguf-q8_0", "gguf-q4_k_m", "prune"):
        cand = first.get(step)
        if cand and parents.get(cand) in scores and cand in scores:
            drop = scores[parents[cand]]["rougeL"]["mean"] - scores[cand]["rougeL"]["mean"]
            out[f"{step.replace('-', '_')}_rougeL_drop"] = 100 * drop
    out["distill_gain_kept"] = _gain_kept(scores, first.get("distill"), parents, evaluations)
    return out


def _gain_kept(scores, student, parents, evaluations) -> float | None:
    """(student - zero-shot) / (teacher - zero-shot) on ROUGE-L, as benchmarks/optimize.py defines it."""
    teacher = parents.get(student) if student else None
    zero_shot = next((n for n in evaluations if n.endswith(":zero-shot")), None)
    if not (student in scores and teacher in scores and zero_shot in scores):
        return None
    base = scores[zero_shot]["rougeL"]["mean"]
    gain = scores[teacher]["rougeL"]["mean"] - base
    return (scores[student]["rougeL"]["mean"] - base) / gain if gain > 0 else None


def resume_check(first_records: list[dict], kill: dict, result: dict, outcomes: list[dict]) -> dict:
    """The steps finished before the kill are cached, the killed one is resumed, a killed fine-tune went on
    from its checkpoint."""
    status = {s["step"]: s["status"] for s in result["steps"]}
    finished = [r["step"] for r in first_records if r["status"] == "succeeded"]
    check = {
        "killed_step": kill["step"] if kill["killed"] else None,
        "finished_before_kill": finished,
        "cached_after": [s for s in finished if status.get(s) == "cached"],
        "killed_step_status": status.get(kill["step"]),
    }
    check["resumed_from"] = next(
        (s.get("extra", {}).get("resumed_from") for s in outcomes if s.get("step") == kill["step"]),
        None,
    )
    check["ok"] = bool(
        kill["killed"] and finished and check["cached_after"] == finished and check["killed_step_status"] == "resumed"
    )
    return check


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"))
    parser.add_argument("--profile", default="full", help="full (the issue's sizes), or smoke (a tiny model's check)")
    parser.add_argument("--workdir", default=None, help="project folder (default: a temp folder); kept afterwards")
    parser.add_argument("--resume", action="store_true", help="keep --workdir's project and continue its run")
    parser.add_argument("--kill-at", default="full", help="the step to SIGKILL the first attempt in; 'none': no kill")
    parser.add_argument("--batch", type=int, default=8, help="generation batch size")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with the planner's estimates and stop")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lifecycle.json"))
    parser.add_argument("--report-dir", default=str(REPO / "benchmarks" / "results" / "lifecycle"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import tempfile

    args = _parse(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lifecycle-"))
    if not (args.resume and (root / "odyssey.yaml").exists()):
        shutil.rmtree(root, ignore_errors=True)
        build_project(root, args)
    if args.dry_run:
        sys.exit(subprocess.call(_command(root, args.profile, "--dry-run"), env=_env()))
    log_path = root / "lifecycle.log"
    with log_path.open("a") as log:
        kill = {"killed": False, "step": None, "wall_s": 0.0}
        if args.kill_at != "none" and not args.resume:
            kill = attempt_killed(root, args.profile, args.kill_at, log)
        first_records = _records(root)
        result, second_wall = attempt_to_the_end(root, args.profile, log)
    write_results(root, args, kill, first_records, result, second_wall)


def _records(root: Path) -> list[dict]:
    from odyssey.project import Project
    from odyssey.store.pipeline import mark_interrupted, step_records

    if not (root / ".odyssey").exists():
        return []
    project = Project.load(root)
    mark_interrupted(project.store)  # the killed attempt's running step, with its time up to now
    return step_records(project.store)


def write_results(root: Path, args, kill: dict, first_records: list[dict], result: dict, second_wall: float) -> None:
    import torch

    from odyssey.project import Project
    from odyssey.store.pipeline import latest_step, step_records

    project = Project.load(root)
    records = step_records(project.store)
    result["outcomes"] = [
        {"step": s["step"], **(latest_step(project.store, s["step"], status="succeeded") or {}).get("outcome", {})}
        for s in result["steps"]
    ]
    evaluations = next(o["extra"]["evaluations"] for o in result["outcomes"] if o["step"] == "evaluate")
    scores = candidate_scores(project, evaluations)
    found = figures(project, result, scores, evaluations)
    resume = resume_check(first_records, kill, result, result["outcomes"])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    results = {
        "model": args.model,
        "profile": args.profile,
        "device": device,
        "data": "DialogSum validation: rows 0-349 train, 350-399 validation, 400-499 test (no shuffling)",
        **found,
        "wall_s": round(kill["wall_s"] + second_wall, 1),
        "wall_s_goal": 3 * 3600,
        "resume_ok": resume["ok"],
        "resume": resume,
        "candidates": {
            c["name"]: {"stage": c["stage"], "parent": c["parent"], **scores.get(c["name"], {})}
            for c in result["board"]["candidates"]
        },
        "best": result["board"]["best"],
        "gains": result["gains"],
        "steps": step_walls(records),
        "command": " ".join(["python", "benchmarks/lifecycle.py", *sys.argv[1:]]),
    }
    copy_report(root, Path(args.report_dir))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k not in {"candidates", "steps", "gains"}}, indent=2))


def copy_report(root: Path, dest: Path) -> None:
    src = root / ".odyssey" / "pipeline"
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.glob("*"):
        if path.suffix in {".md", ".png"}:
            shutil.copy2(path, dest / path.name)


if __name__ == "__main__":
    main()
