"""lm-eval scores of the packaged models on the shipped local tasks (mini-mmlu, boolq-mini, capitals).

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/select_lmeval.py [--limit N]

Writes benchmarks/results/select_lmeval.json (score, stderr and wall time per model and task).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["packaged:smollm2-135m-instruct", "packaged:gemma3-270m"]
TASKS = ["local:mini-mmlu", "local:boolq-mini", "local:capitals"]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="first N items per task (default: all 40)")
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from odyssey.select.benchmarks import run_benchmarks

    payload = {"tasks": TASKS, "limit": args.limit, "models": {}}
    for model in MODELS:
        started = time.perf_counter()
        result = run_benchmarks(TASKS, model=model, batch_size=8, limit=args.limit)
        payload["models"][model] = {
            "wall_s": round(time.perf_counter() - started, 1),
            "scores": {
                s["task"]: {
                    "metric": s["metric"],
                    "value": round(s["value"], 4),
                    "stderr": round(s["stderr"] or 0, 4),
                    "n": s["n_samples"],
                }
                for s in result.scores
            },
        }
        print(model, json.dumps(payload["models"][model]), flush=True)
    payload["chance"] = {"mini-mmlu": 0.25, "boolq-mini": 0.5, "capitals": 0.0}
    (ROOT / "benchmarks" / "results" / "select_lmeval.json").write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
