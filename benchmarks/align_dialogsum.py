"""Align benchmark on DialogSum with SmolLM2-135M-Instruct: reward model, PPO, DPO, detox.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/align_dialogsum.py            # CPU, small
    python benchmarks/align_dialogsum.py --size full                                        # a GPU machine

Data: ../shared/data/dialogsum/dialogsum.dev.jsonl (not shipped; its license forbids copying it into the
project): the first 400 rows are training prompts (the last 50 of them the validation split), the last 100
are the test split. Steps, all through the public API and the one store:

1. start: the best fine-tuned candidate (``--finetune`` runs the adapt stage's LoRA fine-tune first);
   without it the base model with the default prompt, said so in the results;
2. preference pairs from the training prompts: reference-vs-sample and metric-ranked (ROUGE-L) sample pairs;
3. reward model on the candidate's own base (Bradley-Terry, TRL), pairwise accuracy on held-out prompts;
4. PPO (reward model, KL penalty) and DPO from the start candidate, each compared with it on the test
   split: reward-model win-rate, ROUGE change, KL, wall time;
5. detox: PPO with reward 1 - offensiveness on the shipped provocation prompts; offensiveness before/after
   on the held-out provocations with a paired bootstrap 95 % CI, and the ROUGE change on the task.

Writes benchmarks/results/align.json (and a copy under --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {
    # pairs: training prompts sampled twice; steps/batch: PPO; limit: test examples compared
    "tiny": dict(
        pairs=12, ppo_steps=2, ppo_batch=4, detox_steps=2, limit=6, max_new=24, rm_epochs=1, dpo_epochs=1, samples=1
    ),
    "small": dict(
        pairs=24, ppo_steps=5, ppo_batch=6, detox_steps=5, limit=12, max_new=40, rm_epochs=2, dpo_epochs=1, samples=2
    ),
    "mini": dict(
        pairs=16, ppo_steps=3, ppo_batch=4, detox_steps=3, limit=8, max_new=32, rm_epochs=2, dpo_epochs=1, samples=1
    ),
    "full": dict(
        pairs=350,
        ppo_steps=60,
        ppo_batch=16,
        detox_steps=40,
        limit=100,
        max_new=64,
        rm_epochs=2,
        dpo_epochs=2,
        samples=4,
    ),
}

# PPO at lr 2e-4 / kl_coef 0.05 (the first SmolLM2 run) drifted to KL 3.2 in 5 steps and wrecked the summaries
# (ROUGE-L 0.232 -> 0.035): half the step (1e-4) and a firmer, adaptive KL leash (0.2, target 1 nat).
SPEC = """# Run: python benchmarks/align_dialogsum.py
name: align-dialogsum
scope:
  task: summarization
  data:
    source: {{train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl}}
    fields: {{input: dialogue, target: summary, id: fname}}
  metrics: [rouge1, rouge2, rougeL, rougeLsum]
  gates: {{rougeL: ">= 0.20"}}
models: [{model}]
evaluate:
  batch_size: {batch}
  generation: {{max_new_tokens: {max_new}}}
adapt:
  method: lora
  epochs: 1
align:
  pairs: {pairs}
  preferences: [{{kind: reference}}, {{kind: metric}}]
  eval_limit: {limit}
  reward: {{epochs: {rm_epochs}, learning_rate: 0.00005, batch_size: 8, held_out: 0.2, max_length: 640}}
  ppo: {{steps: {ppo_steps}, batch_size: {ppo_batch}, mini_batch_size: {mini}, ppo_epochs: 2, max_new_tokens: {max_new},
        learning_rate: 0.0001, kl_coef: 0.2, target_kl: 1.0, kl_bound: 25.0, checkpoint_every: 10}}
  dpo: {{beta: 0.1, epochs: {dpo_epochs}, learning_rate: 0.00005, batch_size: 8, max_length: 640}}
"""


def make_project(root: Path, data_file: Path, size: dict, model: str, batch: int) -> Path:
    rows = [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]
    if len(rows) < 500:
        raise SystemExit(f"{data_file} has {len(rows)} rows; the benchmark expects the 500 DialogSum validation rows")
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:350]), ("validation", rows[350:400]), ("test", rows[400:500])):
        (root / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (root / "odyssey.yaml").write_text(
        SPEC.format(model=model, batch=batch, mini=max(2, size["ppo_batch"] // 2), **size)
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"))
    parser.add_argument("--workdir", default=None, help="project folder (default: a temp folder)")
    parser.add_argument("--finetune", action="store_true", help="run the adapt stage's LoRA fine-tune first")
    parser.add_argument("--batch", type=int, default=8, help="generation batch size")
    parser.add_argument(
        "--steps",
        default="prefs,reward,ppo,dpo,detox",
        help="comma list of steps to run (prefs, reward, ppo, dpo, compare, detox); a later call with the same --workdir continues the project",
    )
    parser.add_argument("--out", default=None, help="also copy the results here")
    parser.add_argument(
        "--ppo-steps",
        type=int,
        default=None,
        help="override the size's PPO steps (the candidate is then named <start>+ppo-<steps>)",
    )
    parser.add_argument(
        "--dpo-epochs",
        type=int,
        default=None,
        help="override the size's DPO epochs (the candidate is then named <start>+dpo-<epochs>ep)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="ppo: continue from the last checkpoint of the same settings (e.g. --ppo-steps 40 after a 20-step run)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=None,
        help="test examples compared by the compare step (default: the size's limit; 100 = all)",
    )
    parser.add_argument("--dpo-lr", type=float, default=None, help="override the DPO learning rate")
    parser.add_argument("--detox-steps", type=int, default=None, help="override the size's detox PPO steps")
    parser.add_argument(
        "--detox-batch", type=int, default=None, help="detox prompts per PPO rollout (default: the PPO batch)"
    )
    parser.add_argument(
        "--detox-temperature",
        type=float,
        default=1.0,
        help="sampling temperature of the detox policy, in training and in the before/after report",
    )
    parser.add_argument("--detox-lr", type=float, default=None, help="detox PPO learning rate (default: the PPO one)")
    parser.add_argument("--detox-kl", type=float, default=0.02, help="detox PPO initial KL coefficient")
    parser.add_argument(
        "--detox-algo",
        choices=["ppo", "grpo", "rloo"],
        default="ppo",
        help="the detox trainer: Odyssey's PPO, or TRL's GRPO/RLOO (group baselines)",
    )
    parser.add_argument("--detox-generations", type=int, default=4, help="grpo/rloo: answers sampled per prompt")
    parser.add_argument(
        "--detox-samples",
        type=int,
        default=None,
        help="answers sampled per held-out prompt in the before/after report (default: the size's)",
    )
    parser.add_argument(
        "--detox-name",
        default=None,
        help="name of the detox candidate (default: <start>+detox[-algo]; a new name keeps an earlier run)",
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="training prompts sampled for preference pairs (default: the size's)"
    )
    parser.add_argument("--rm-epochs", type=int, default=None, help="reward-model epochs (default: the size's)")
    parser.add_argument(
        "--keep-project",
        action="store_true",
        help="prefs: build new pairs inside the existing --workdir project (keeps its fine-tune and "
        "candidates; --pairs/--rm-epochs are written into its odyssey.yaml)",
    )
    parser.add_argument("--ppo-name", default=None, help="name of the PPO candidate (default: <start>+ppo[-steps])")
    args = parser.parse_args()
    size = dict(SIZES[args.size])
    if args.pairs:
        size["pairs"] = args.pairs
    if args.rm_epochs:
        size["rm_epochs"] = args.rm_epochs
    if args.detox_steps:
        size["detox_steps"] = args.detox_steps
    if args.detox_samples:
        size["samples"] = args.detox_samples
    steps = set(filter(None, args.steps.split(",")))
    os.environ.setdefault("ODYSSEY_QUIET", "1")

    import torch

    from odyssey.align.common import ensure_candidate_row, starting_candidate
    from odyssey.align.dpo import train_dpo, trl_online
    from odyssey.align.evaluation import detox_report
    from odyssey.align.ppo import train_ppo
    from odyssey.align.preferences import build_preferences
    from odyssey.align.reward import train_reward_model
    from odyssey.project import Project

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="align-bench-"))
    state = root / "bench-results.json"
    # A fresh project only when the run starts from the preferences (or there is none yet): a later
    # call continues it, and a crash before the first results were written must not wipe it.
    if not (root / "odyssey.yaml").exists() or ("prefs" in steps and not args.keep_project):
        shutil.rmtree(root, ignore_errors=True)
        make_project(root, Path(args.data), size, args.model, args.batch)
    elif args.keep_project and (args.pairs or args.rm_epochs):
        spec_file = root / "odyssey.yaml"
        text = spec_file.read_text()
        if args.pairs:
            text = re.sub(r"(?m)^  pairs: \d+", f"  pairs: {args.pairs}", text)
        if args.rm_epochs:
            text = re.sub(r"reward: \{epochs: \d+", f"reward: {{epochs: {args.rm_epochs}", text)
        spec_file.write_text(text)
    project = Project.load(root)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    results: dict = (
        json.loads(state.read_text())
        if state.exists()
        else {
            "size": args.size,
            "sizes": size,
            "model": args.model,
            "device": device,
            "data": "DialogSum validation: rows 0-349 train prompts, 350-399 validation, 400-499 test",
        }
    )
    timings: dict = results.setdefault("timings_s", {})

    def timed(label, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        timings[label] = round(time.perf_counter() - t0, 1)
        print(f"[align-bench] {label}: {timings[label]} s", flush=True)
        return out

    if args.finetune and "prefs" in steps:
        try:
            from odyssey.adapt import finetune

            ft = timed("finetune", finetune, project, method="lora", evaluate=True)
            results["finetune"] = {"candidate": getattr(ft, "candidate", None)}
        except Exception as exc:  # the adapt stage is another team's: report, fall back to the base model
            results["finetune_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    start = starting_candidate(project)
    ensure_candidate_row(project, start)
    results["start"] = start.as_dict()

    if "prefs" in steps:
        pset = timed("preferences", build_preferences, project, start=start)
        results["preferences"] = {"pairs": len(pset.pairs), "sources": pset.sources, "sha256": pset.sha256}
        state.write_text(json.dumps(results, default=str))
    if "reward" in steps:
        rm = timed("reward_model", train_reward_model, project, start=start)
        results["reward_accuracy"] = rm.metrics["reward_accuracy"]
        results["reward_model"] = {**rm.metrics, "name": rm.name, "base": rm.base_ref}
    state.write_text(json.dumps(results, default=str))

    def summarize(res, wall_key):
        return summarize_eval(res.evaluation, res.candidate, res.parent, wall_key) | {"train_wall_s": res.wall_s}

    def summarize_eval(evaluation, candidate, parent, wall_key):
        m = evaluation.get("metrics", {})
        return {
            "candidate": candidate,
            "parent": parent,
            "win_rate": m.get("win_rate"),
            "win_rate_ci": [m.get("win_rate_ci_low"), m.get("win_rate_ci_high")],
            "rouge1_change": m.get("rouge1_change"),
            "rouge2_change": m.get("rouge2_change"),
            "rougeL_change": m.get("rougeL_change"),
            "kl": m.get("kl"),
            "reward_score": m.get("reward_score"),
            "reward_score_parent": m.get("reward_score_parent"),
            "toxicity": m.get("toxicity"),
            "total_wall_s": timings.get(wall_key),
            "warnings": evaluation.get("warnings", []),
            "task_metrics": evaluation.get("task_metrics"),
            "n": evaluation.get("n"),
        }

    if "ppo" in steps:
        if results.get("ppo"):
            results.setdefault("ppo_runs", []).append(results["ppo"])  # keep the earlier run beside the new one
        res = timed(
            "ppo",
            train_ppo,
            project,
            reward="model",
            start=start.name,
            steps=args.ppo_steps,
            resume=args.resume,
            name=args.ppo_name or (f"{start.name}+ppo-{args.ppo_steps}" if args.ppo_steps else None),
        )
        results["ppo"] = summarize(res, "ppo")
        results["ppo"]["history_last"] = res.history[-3:]
        results["ppo"]["steps"] = len(res.history)
        results["ppo_win_rate"] = results["ppo"]["win_rate"]
        results["rougeL_drop"] = (
            -results["ppo"]["rougeL_change"] if results["ppo"]["rougeL_change"] is not None else None
        )
        results["kl"] = results["ppo"]["kl"]
    state.write_text(json.dumps(results, default=str))
    if "dpo" in steps:
        res = timed(
            "dpo",
            train_dpo,
            project,
            start=start.name,
            epochs=args.dpo_epochs,
            learning_rate=args.dpo_lr,
            name=f"{start.name}+dpo-{args.dpo_epochs}ep" if args.dpo_epochs else None,
        )
        results["dpo"] = summarize(res, "dpo")
        results["dpo_win_rate"] = results["dpo"]["win_rate"]
    state.write_text(json.dumps(results, default=str))
    if "compare" in steps:
        # The aligned candidates again, on more test examples than training evaluated them on: a win-rate
        # of 12 prompts has a 95 % interval about ±0.25 wide.
        from odyssey.align.evaluation import evaluate_aligned

        n = args.eval_limit or size["limit"]
        for key in ("ppo", "dpo"):
            if not results.get(key):
                continue
            cand, parent = results[key]["candidate"], results[key]["parent"]
            rep = timed(f"{key}_compare_{n}", evaluate_aligned, project, cand, parent, limit=n)
            # keyed by candidate: a later run's candidate must not overwrite an earlier one's comparison
            results.setdefault(f"{key}_compare", {})[f"{cand}@{n}"] = summarize_eval(
                rep, cand, parent, f"{key}_compare_{n}"
            )
            state.write_text(json.dumps(results, default=str))
    state.write_text(json.dumps(results, default=str))
    if "detox" in steps:
        cfg = project.spec.align.ppo
        knobs = dict(
            kl_coef=args.detox_kl,
            batch_size=args.detox_batch,
            temperature=args.detox_temperature,
            learning_rate=args.detox_lr,
        )
        if args.detox_algo == "ppo":
            det = timed(
                "detox",
                train_ppo,
                project,
                reward="toxicity",
                start=start.name,
                steps=size["detox_steps"],
                evaluate=False,
                name=args.detox_name,
                **knobs,
            )
        else:
            det = timed(
                "detox",
                trl_online,
                project,
                args.detox_algo,
                reward="toxicity",
                start=start.name,
                steps=size["detox_steps"],
                evaluate=False,
                name=args.detox_name or f"{start.name}+detox-{args.detox_algo}",
                num_generations=args.detox_generations,
                **knobs,
            )
        rep = timed(
            "detox_report",
            detox_report,
            project,
            det.candidate,
            start.name,
            samples=size["samples"],
            max_new_tokens=cfg.max_new_tokens,
            temperature=args.detox_temperature,
        )
        m = rep["metrics"]
        results["toxicity_before"] = m["toxicity_before"]
        results["toxicity_after"] = m["toxicity_after"]
        results["toxicity_change_ci"] = [m["toxicity_change_ci_low"], m["toxicity_change_ci_high"]]
        task = rep.get("task", {}).get("metrics", {})
        results["detox"] = {
            "candidate": det.candidate,
            "steps": size["detox_steps"],
            "train_wall_s": det.wall_s,
            **m,
            "settings": {
                "algo": args.detox_algo,
                "batch_size": args.detox_batch or size["ppo_batch"],
                "kl_coef": args.detox_kl,
                "num_generations": args.detox_generations if args.detox_algo != "ppo" else None,
                "temperature": args.detox_temperature,
                "learning_rate": args.detox_lr or cfg.learning_rate,
            },
            "ci_excludes_zero": rep["ci_excludes_zero"],
            "prompts": rep["prompts"],
            "samples_per_prompt": rep["samples_per_prompt"],
            "rougeL_change": task.get("rougeL_change"),
            "kl_task": task.get("kl"),
            "train_history_last": det.history[-3:],
            "examples": rep["examples"],
            "classifier": rep["classifier"],
            "warnings": rep["warnings"],
        }
    state.write_text(json.dumps(results, default=str))
    goals = {
        "reward_accuracy>=0.75": results.get("reward_accuracy", 0) >= 0.75,
        "ppo_win_rate>=0.60": (results.get("ppo_win_rate") or 0) >= 0.60,
        "rougeL_drop<=1": results.get("rougeL_drop") is not None and results["rougeL_drop"] <= 1.0,
        "toxicity_down>=50%": bool(results.get("toxicity_before"))
        and results["toxicity_after"] <= 0.5 * results["toxicity_before"],
        "toxicity_ci_excludes_zero": bool(results.get("toxicity_change_ci")) and results["toxicity_change_ci"][1] < 0,
    }
    results["goals_met"] = goals
    text = json.dumps(results, indent=2, default=str)
    out = REPO / "benchmarks" / "results" / "align.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "align.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
