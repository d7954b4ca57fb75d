"""DPO, KTO, ORPO and SimPO on the same DialogSum preference pairs, ranked against DPO on the same test rows.

The full-size run (SmolLM2-135M-Instruct, LoRA fine-tune first, pairs from 350 training prompts, the 100
test rows; hours on two CPU cores, minutes on a GPU):

    nice flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/align_methods.py --finetune --rows 350 --eval-rows 100

A smoke run (a few minutes; writes to --out, not to benchmarks/results/):

    nice -n 19 flock -s /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/align_methods.py --rows 8 --eval-rows 4 \\
        --out /tmp/align_methods_smoke.json

Data: ../shared/data/dialogsum/dialogsum.dev.jsonl, split as benchmarks/align_dialogsum.py splits it (rows 0-349
train prompts, 350-399 validation, 400-499 test); the project is that benchmark's (``make_project``) with
sections for KTO, ORPO and SimPO at the same training settings as DPO. Steps, all through the public API:

1. start: the best fine-tuned candidate (``--finetune`` runs the adapt stage's LoRA fine-tune first), else the
   base model with the default prompt;
2. preference pairs from the first ``--rows`` training prompts: reference-vs-sample and metric-ranked (ROUGE-L)
   sample pairs (align_dialogsum's sources);
3. the reward model (Bradley-Terry on the one loop) that scores the win-rates;
4. DPO, KTO (the pairs split into desirable / undesirable answers), ORPO and SimPO from the start candidate, each
   on the one loop with the same epochs, learning rate, batch size and LoRA rank;
5. ``rank_methods`` (what ``odyssey align compare`` prints): each method against its parent on ``--eval-rows``
   test rows (reward-model win-rate with its bootstrap 95 % interval, ROUGE-L change in points, Monte-Carlo KL in
   nats per answer) and head to head with DPO on the same rows.

Writes benchmarks/results/align_methods.json (or --out).

Resumable: with ``--workdir DIR --resume`` a run cut off midway keeps DIR and skips every step its journal
(DIR/align_methods.journal.json, written after each step) records as finished; the interrupted step starts over.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.align_dialogsum import make_project  # noqa: E402  (the align benchmark's project and pairs)

METHODS = ("dpo", "kto", "orpo", "simpo")


def _project(root: Path, args) -> None:
    size = dict(
        pairs=args.rows,
        ppo_steps=1,
        ppo_batch=4,
        detox_steps=1,
        limit=args.eval_rows,
        max_new=args.max_new,
        rm_epochs=args.rm_epochs,
        dpo_epochs=args.epochs,
        samples=1,
    )
    make_project(root, Path(args.data), size, args.model, args.batch)
    # The same training settings for every method (align_dialogsum's DPO line), each with its own defaults
    # for its loss (beta, SimPO's gamma): only the loss differs.
    lr = f"{args.lr:.10f}".rstrip("0")  # YAML reads 5e-05 (no dot) as text
    common = (
        f"epochs: {args.epochs}, learning_rate: {lr}, batch_size: {args.train_batch}, grad_accum: {args.grad_accum}, "
        "max_length: 640, "
        f"held_out: {args.held_out}"
    )
    spec = (root / "odyssey.yaml").read_text()
    dpo_line = f"  dpo: {{beta: 0.1, epochs: {args.epochs}, learning_rate: 0.00005, batch_size: 8, max_length: 640}}\n"
    if dpo_line not in spec:
        raise SystemExit("benchmarks/align_dialogsum.py's SPEC changed: update the dpo line this benchmark replaces")
    (root / "odyssey.yaml").write_text(spec.replace(dpo_line, "".join(f"  {m}: {{{common}}}\n" for m in METHODS)))


class Journal:
    """The finished steps of one run and what each returned, rewritten after every step (temp file, then
    os.replace, so a kill mid-write leaves the previous journal)."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        saved = json.loads(path.read_text()) if resume and path.exists() else {}
        self.steps: dict = saved.get("steps", {})
        self.timings: dict[str, float] = saved.get("timings_s", {})
        if self.steps:
            print(f"[align-methods] resuming {path.parent}: done {', '.join(self.steps)}", flush=True)

    def done(self, step: str) -> bool:
        return step in self.steps

    def record(self, step: str, result: dict) -> None:
        self.steps[step] = result
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.steps, "timings_s": self.timings}, indent=2, default=str))
        os.replace(tmp, self.path)


def _trained(project, res) -> dict:
    return {
        "candidate": res.candidate,
        "train_wall_s": res.wall_s,
        "steps": len([h for h in res.history if "loss" in h]),
        "train_metrics": res.metrics,
        "history_first": res.history[:1],
        "history_last": res.history[-1:],
        "settings": project.store.candidate(res.candidate)["config"]["align"],
    }


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=350, help="training prompts that preference pairs are made from")
    parser.add_argument("--eval-rows", type=int, default=100, help="test rows every method is compared on")
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"))
    parser.add_argument("--workdir", default=None, help="project folder (default: a temp folder)")
    parser.add_argument("--resume", action="store_true", help="keep --workdir and skip the steps it finished")
    parser.add_argument("--finetune", action="store_true", help="run the adapt stage's LoRA fine-tune first")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every preference method")
    parser.add_argument("--lr", type=float, default=5e-5, help="learning rate of every preference method")
    parser.add_argument("--train-batch", type=int, default=8, help="pairs per step (KTO: answers per step)")
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=2,
        help="micro-batches per step (8 pairs of 640 tokens in one pass were OOM-killed on 24 GB; 2 fit)",
    )
    parser.add_argument("--held-out", type=float, default=0.0, help="pairs kept out for a validation loss")
    parser.add_argument("--rm-epochs", type=int, default=2, help="reward-model epochs")
    parser.add_argument("--max-new", type=int, default=64, help="most tokens of a generated summary")
    parser.add_argument("--batch", type=int, default=8, help="generation batch size")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of the methods to train")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "align_methods.json"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = _parse(argv)
    methods = [m for m in args.methods.split(",") if m]
    if "dpo" not in methods:
        raise SystemExit("--methods must include dpo: the others are ranked against it")
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    import torch

    from odyssey.align.common import ensure_candidate_row, starting_candidate
    from odyssey.align.dpo import train_preference
    from odyssey.align.evaluation import rank_methods
    from odyssey.align.preferences import build_preferences
    from odyssey.align.reward import train_reward_model
    from odyssey.project import Project

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="align-methods-"))
    journal = Journal(root / "align_methods.journal.json", resume=args.resume and args.workdir is not None)
    if not journal.steps:
        shutil.rmtree(root, ignore_errors=True)
        _project(root, args)
    project = Project.load(root)
    timings = journal.timings

    def timed(label, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        timings[label] = round(time.perf_counter() - t0, 1)
        print(f"[align-methods] {label}: {timings[label]} s", flush=True)
        return out

    if args.finetune and not journal.done("finetune"):
        from odyssey.adapt import finetune

        timed("finetune", finetune, project, method="lora", evaluate=True)
        journal.record("finetune", {})
    start = starting_candidate(project)
    ensure_candidate_row(project, start)
    if not journal.done("preferences"):
        pset = timed("preferences", build_preferences, project, start=start)
        journal.record("preferences", {"pairs": len(pset.pairs), "sources": pset.sources, "sha256": pset.sha256})
    if not journal.done("reward_model"):
        rm = timed("reward_model", train_reward_model, project, start=start)
        journal.record("reward_model", {"name": rm.name, **rm.metrics})
    trained = {}
    for method in methods:
        if not journal.done(method):
            res = timed(method, train_preference, project, method, start=start.name, evaluate=False)
            journal.record(method, _trained(project, res))
        trained[method] = journal.steps[method]
    ranking = timed("compare", rank_methods, project, parent=start.name, limit=args.eval_rows)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    results = {
        "model": args.model,
        "device": device,
        "data": "DialogSum validation: rows 0-349 train prompts, 350-399 validation, 400-499 test",
        "rows": args.rows,
        "eval_rows": ranking["n"],
        "start": start.as_dict(),
        "preferences": journal.steps["preferences"],
        "reward_model": journal.steps["reward_model"],
        "methods": {
            r["method"]: {
                **trained.get(r["method"], {}),
                "rank": r["rank"],
                "win_rate": r["win_rate"],
                "win_rate_ci": r["win_rate_ci"],
                "rougeL_change": r["rougeL_change"],
                "kl": r["kl"],
                "win_rate_vs_dpo": r.get("win_rate_vs_dpo"),
                "win_rate_vs_dpo_ci": r.get("win_rate_vs_dpo_ci"),
                "metric_win_rate_vs_dpo": r["metric_win_rate_vs_dpo"],
            }
            for r in ranking["methods"]
        },
        "ranked_by": ranking["ranked_by"],
        "ranking": [r["method"] for r in ranking["methods"]],
        "warnings": ranking["warnings"],
        "timings_s": timings,
        "command": " ".join(["python", "benchmarks/align_methods.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    text = json.dumps(results, indent=2, default=str)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
