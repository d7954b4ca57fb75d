"""In-context learning on DialogSum with SmolLM2-135M-Instruct, and the harness's batching gain.

    .venv/bin/python benchmarks/prompt_icl.py [--n 100] [--throughput-n 24]

1. Zero-shot vs one-shot vs few-shot (3) ROUGE-1/2/L on the first N rows of the DialogSum
   validation file (../shared/data/dialogsum), in-context examples chosen by MiniLM similarity from
   rows 100-499 (never from the evaluated rows).
2. Evaluation throughput (examples/s) of the same zero-shot prompts generated in batches of 8 vs
   one at a time, in the same run, plus whether the outputs agree.
Writes benchmarks/results/prompt_icl.json (after each step).
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
MODEL = "packaged:smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="evaluated rows (the first N)")
    parser.add_argument("--throughput-n", type=int, default=16, help="rows for the batched vs single comparison")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")

    from odyssey.data import read_records, to_examples
    from odyssey.engines.transformers import generate
    from odyssey.evaluate import run_harness
    from odyssey.models import load
    from odyssey.prompts import PromptConfig, render
    from odyssey.spec import Scope

    scope = Scope.model_validate(
        {
            "task": "summarization",
            "data": {"source": str(DATA), "fields": {"input": "dialogue", "target": "summary", "id": "fname"}},
            "metrics": ["rouge1", "rouge2", "rougeL"],
        }
    )
    rows = to_examples(read_records(DATA), scope.data, str(DATA))
    evaluated, pool = rows[: args.n], rows[100:]
    loaded = load(MODEL)
    generation = {"max_new_tokens": args.max_new_tokens}
    results: dict = {"model": MODEL, "n": len(evaluated), "max_new_tokens": args.max_new_tokens, "variants": {}}

    # Throughput: the same zero-shot prompts, batched (8) vs one at a time.
    cfg = PromptConfig.default("summarization", generation=generation)
    subset = evaluated[: args.throughput_n]
    prompts = [render(loaded.tokenizer, cfg, ex, [], 4096).text for ex in subset]
    batched, b_stats = generate(loaded, prompts, generation, batch_size=8)
    single, s_stats = generate(loaded, prompts, generation, batch_size=1)
    same = sum(a.text == b.text for a, b in zip(batched, single))
    results["throughput"] = {
        "n": len(subset),
        "batched_examples_per_s": round(len(subset) / b_stats["wall_s"], 3),
        "single_examples_per_s": round(len(subset) / s_stats["wall_s"], 3),
        "batched_tokens_per_s": round(b_stats["new_tokens"] / b_stats["wall_s"], 1),
        "single_tokens_per_s": round(s_stats["new_tokens"] / s_stats["wall_s"], 1),
        "identical_outputs": same,
    }
    t = results["throughput"]
    t["ratio"] = round(t["batched_examples_per_s"] / t["single_examples_per_s"], 2)
    print(
        f"throughput: batched {t['batched_examples_per_s']} ex/s vs single {t['single_examples_per_s']} ex/s "
        f"-> ratio {t['ratio']}x; identical outputs {same}/{len(subset)}",
        flush=True,
    )
    save(results)

    for shots, selection in [(0, "fixed"), (1, "similar"), (3, "similar")]:
        cfg = PromptConfig.default("summarization", shots=shots, selection=selection, generation=generation)
        started = time.perf_counter()
        out = run_harness(loaded, evaluated, cfg, scope, pool=pool, batch_size=8)
        wall = time.perf_counter() - started
        scores = {k: round(out.metrics[k], 4) for k in ("rouge1", "rouge2", "rougeL")}
        results["variants"][cfg.name] = {
            **scores,
            "wall_s": round(wall, 1),
            "notes": out.notes,
            "examples_per_s": round(out.metrics["examples_per_s"], 3),
        }
        print(
            f"{cfg.name:<16} " + "  ".join(f"{k}={v:.4f}" for k, v in scores.items()) + f"  ({wall:.0f} s)", flush=True
        )
        save(results)


def save(results: dict) -> None:
    """Written after every step, so a long run that is stopped keeps what it measured."""
    out_path = ROOT / "benchmarks" / "results" / "prompt_icl.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print(f"wrote {out_path}", flush=True)


if __name__ == "__main__":
    main()
