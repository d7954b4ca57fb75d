"""Pretraining each objective (clm, mlm, span) on the shipped corpus with the tiny preset.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/select_pretrain.py [--steps 300]

Reports per objective: parameters, tokens seen, wall time, the validation loss/perplexity curve and a
sample. Writes benchmarks/results/select_pretrain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", default="tiny")
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    from odyssey.project import Project
    from odyssey.scaffold import init_project
    from odyssey.select import pretrain

    payload = {"steps": args.steps, "size": args.size, "objectives": {}}
    with tempfile.TemporaryDirectory(prefix="odyssey-pretrain-") as tmp:
        project = Project.load(init_project(Path(tmp) / "proj", "summarization"))
        for objective in ("clm", "mlm", "span"):
            r = pretrain(project, objective=objective, size=args.size, steps=args.steps)
            payload["objectives"][objective] = {
                "n_params": r.n_params,
                "tokens": r.tokens,
                "steps": r.steps,
                "wall_s": round(r.wall_s, 1),
                "val_loss": round(r.val_loss, 4),
                "val_perplexity": round(r.val_perplexity, 2),
                "curve": [
                    {
                        "step": h["step"],
                        "val_loss": round(h["val_loss"], 4),
                        "val_perplexity": round(h["val_perplexity"], 2),
                    }
                    for h in r.curve
                    if "val_loss" in h
                ],
                "sample": r.sample,
            }
            print(
                objective,
                json.dumps({k: v for k, v in payload["objectives"][objective].items() if k != "curve"}),
                flush=True,
            )
            (ROOT / "benchmarks" / "results" / "select_pretrain.json").write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
