"""DialogSum fine-tuning: SmolLM2-135M-Instruct zero-shot vs best prompt vs LoRA vs full FT vs prompt tuning.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/finetune_dialogsum.py \
        [--workdir /tmp/ftds] [--methods lora,full,prompt_tuning] [--max-seq-len 512] [--eval-n 100]

Builds a project outside the repository (the DialogSum license forbids copying it in): train = the first 400
rows of ../shared/data/dialogsum/dialogsum.dev.jsonl, validation = rows 384-399 (16 rows, inside the training
rows: used only to pick the prompt variant and to monitor the loss, never to select a checkpoint), test = the
last 100 rows. Each method runs ``odyssey.adapt.finetune`` (one epoch) and is scored on test by the harness
(greedy, max_new_tokens 60). Zero-shot and best-prompt rows come from ``odyssey eval`` / ``odyssey prompt``
runs in the same project when present. Results accumulate in benchmarks/results/finetune_dialogsum.json after
each method, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
OUT = ROOT / "benchmarks" / "results" / "finetune_dialogsum.json"

SPEC = """# DialogSum fine-tuning experiment (benchmarks/finetune_dialogsum.py); not shipped
name: dialogsum-ft
version: 1
scope:
  task: summarization
  data:
    source: {{train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl}}
    fields: {{input: dialogue, target: summary, id: fname}}
  metrics: [rouge1, rouge2, rougeL]
  gates:
    rougeL: ">= 0.30"
models:
  - packaged:smollm2-135m-instruct
prompt:
  shots: [0, 1, 3]
  selection: [similar]
  limit: 16
  generation: {{max_new_tokens: 60}}
evaluate:
  batch_size: 8
  generation: {{max_new_tokens: 60}}
adapt:
  epochs: 1
  max_seq_len: {max_seq_len}
  keep_best: false
  save_every: 20
  eval_splits: [test]
"""


def make_project(workdir: Path, max_seq_len: int, n_train: int = 400):
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    if not (data / "test.jsonl").exists():
        rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
        data.mkdir(exist_ok=True)
        for name, part in (
            ("train", rows[:n_train]),
            ("validation", rows[n_train - 16 : n_train]),
            ("test", rows[400:500]),
        ):
            (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    spec = workdir / "odyssey.yaml"
    if not spec.exists():
        spec.write_text(SPEC.format(max_seq_len=max_seq_len))
    from odyssey.project import Project

    return Project.load(workdir)


def collect(project) -> dict:
    """Test metrics of every candidate in the store, with what the fine-tune runs recorded about training."""
    store = project.store
    rows = {}
    for cand in store.candidates():
        test = store.latest_metrics(cand["id"], "test")
        train = store.latest_metrics(cand["id"], "train")
        if not test:
            continue
        rows[cand["name"]] = {
            "stage": cand["stage"],
            **{k: round(test[k], 4) for k in ("rouge1", "rouge2", "rougeL") if k in test},
            "n_test": None,
            "trainable_pct": train.get("trainable_pct"),
            "train_wall_s": train.get("train_wall_s"),
            "train_tokens_per_s": train.get("train_tokens_per_s"),
            "train_peak_memory_gb": train.get("train_peak_memory_gb"),
            "memory_estimate_gb": train.get("memory_estimate_gb"),
            "val_loss": train.get("val_loss"),
            "eval_memory_gb": test.get("memory_gb"),
            "eval_examples_per_s": test.get("examples_per_s"),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/ftds")
    parser.add_argument("--methods", default="lora,full,prompt_tuning")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--n-train", type=int, default=400, help="training rows (the first N, at most 400)")
    parser.add_argument("--eval-n", type=int, default=100, help="test rows scored (the first N of the last 100)")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the zero-shot base model on the test rows (after the methods)",
    )
    parser.add_argument(
        "--prompt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the prompt stage's search (0/1/3 similar shots on validation) and score its best on test",
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")
    from odyssey.adapt import finetune

    project = make_project(Path(args.workdir), args.max_seq_len, min(args.n_train, 400))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("finetune", {})
    results["command"] = "python benchmarks/finetune_dialogsum.py " + " ".join(sys.argv[1:])
    results.update(
        {
            "model": "packaged:smollm2-135m-instruct",
            "train_rows": f"0-{min(args.n_train, 400) - 1}",
            "test_rows": "400-499",
            "max_seq_len": args.max_seq_len,
            "max_new_tokens": 60,
            "epochs": 1,
        }
    )
    for method in [m for m in args.methods.split(",") if m]:
        started = time.perf_counter()
        result = finetune(project, method=method, limit=args.eval_n)
        results["finetune"][method] = {
            "candidate": result.candidate,
            "trainable_params": result.trainable_params,
            "trainable_pct": round(result.trainable_pct, 4),
            "steps": result.steps,
            "tokens": result.tokens,
            "train_wall_s": round(result.wall_s, 1),
            "tokens_per_s": round(result.tokens_per_s, 1),
            "peak_memory_gb": round(result.peak_memory_gb, 2),
            "memory_estimate_gb": round(result.memory_estimate_gb, 2),
            "val_loss": result.val_loss,
            "test": {
                k: round(v, 4)
                for k, v in result.metrics.get("test", {}).items()
                if k in ("rouge1", "rouge2", "rougeL", "memory_gb")
            },
            "total_wall_s": round(time.perf_counter() - started, 1),
        }
        results["candidates"] = collect(project)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"{method}: {results['finetune'][method]}", flush=True)
    if args.prompt and "best_prompt" not in results:
        # The prompt stage's best variant, chosen on validation, scored on the same test rows.
        from odyssey.adapt import prompt_search

        started = time.perf_counter()
        found = prompt_search(project, test_limit=args.eval_n)
        results["best_prompt"] = {
            "variant": found.best.name,
            "shots": found.best.shots,
            "selection": found.best.selection,
            "candidate": found.candidate,
            "test": {k: round(v, 4) for k, v in found.test_metrics.items() if k in ("rouge1", "rouge2", "rougeL")},
            "wall_s": round(time.perf_counter() - started, 1),
        }
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"best prompt: {results['best_prompt']}", flush=True)
    if args.baseline:
        # The zero-shot baseline on the same test rows, through `odyssey eval` (skipped when already measured).
        name = "smollm2-135m-instruct:zero-shot"
        cand = project.store.candidate(name)
        if cand is None or not project.store.latest_metrics(cand["id"], "test"):
            started = time.perf_counter()
            evaluation = project.evaluate(split="test", limit=args.eval_n)
            results["zero_shot"] = {k: round(evaluation.metrics[k], 4) for k in ("rouge1", "rouge2", "rougeL")}
            results["zero_shot"]["wall_s"] = round(time.perf_counter() - started, 1)
            print(f"zero-shot: {results['zero_shot']}", flush=True)
    results["candidates"] = collect(project)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
