"""`odyssey select` on DialogSum: the two packaged models zero-shot on the evaluation rows, ranked.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/select_dialogsum.py [--n 100]

Rows 0-399 of ../shared/data/dialogsum/dialogsum.dev.jsonl are the train split, rows 400-499 the
evaluation (test) split; the data stays in a temporary project (its license forbids copying it).
Writes benchmarks/results/select_dialogsum.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
MODELS = ["packaged:smollm2-135m-instruct", "packaged:gemma3-270m"]

SPEC = """name: dialogsum-select
scope:
  task: summarization
  data:
    source: {{train: train.jsonl, test: eval.jsonl}}
    fields: {{input: dialogue, target: summary, id: fname}}
  metrics: [rouge1, rouge2, rougeL, rougeLsum]
  gates:
    rougeL: ">= 0.20"
    p95_latency_ms: "<= 30000"
  constraints: {{memory_gb: 4, hardware: cpu}}
models: {models}
evaluate:
  generation: {{max_new_tokens: 60}}
select:
  split: test
  limit: {n}
  batch_size: 8
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")
    from odyssey.project import Project
    from odyssey.select import select_models

    lines = DATA.read_text().splitlines()
    with tempfile.TemporaryDirectory(prefix="odyssey-select-") as tmp:
        root = Path(tmp)
        (root / "train.jsonl").write_text("\n".join(lines[:400]) + "\n")
        (root / "eval.jsonl").write_text("\n".join(lines[400:500]) + "\n")
        (root / "odyssey.yaml").write_text(SPEC.format(models=json.dumps(MODELS), n=args.n))
        project = Project.load(root)
        started = time.perf_counter()
        result = select_models(project)
        wall = time.perf_counter() - started
    keep = (
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "p50_latency_ms",
        "p95_latency_ms",
        "tokens_per_s",
        "memory_gb",
        "mean_new_tokens",
    )
    payload = {
        "n": result.n_examples,
        "split": "rows 400-499 (test)",
        "primary_metric": result.primary_metric,
        "chosen": result.chosen,
        "wall_s": round(wall, 1),
        "notes": result.notes,
        "ranking": [
            {
                "rank": r.rank,
                "candidate": r.name,
                "model": r.model_ref,
                "family": r.family,
                "n_params": r.n_params,
                "passed": r.passed,
                "note": r.note,
                **{k: round(r.metrics[k], 4) for k in keep if k in r.metrics},
            }
            for r in result.ranking
        ],
    }
    out = ROOT / "benchmarks" / "results" / "select_dialogsum.json"
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
