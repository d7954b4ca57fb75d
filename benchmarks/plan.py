"""The feasibility planner against measurement: predicted vs measured peak memory and tokens/s.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/plan.py

Cases: inference, LoRA and full fine-tuning of SmolLM2-135M and of the tiny Llama, each measured in a
fresh process (peak resident memory = VmHWM; tokens/s over the timed steps). The planner's probe is
re-measured at the start (``--keep-probe`` reuses the cached one). Ratios are predicted / measured.

Then real fine-tunes (``--dialogsum``, on by default): ``odyssey.adapt.finetune`` of SmolLM2-135M with LoRA
and with full fine-tuning, one epoch over the first 400 rows of ../shared/data/dialogsum/dialogsum.dev.jsonl
(benchmarks/finetune_dialogsum.py's project, max_seq_len 512, adapt.lora's defaults), each in a fresh
process. Beside each: the estimate the fine-tune printed before training (the planner's, pinned equal by
tests/models/test_memory.py) and the peak resident set it measured during training, both counted from what
the process held before the model. Goal: within 20 %. ``--cases dialogsum`` reruns only these and keeps
the other cases of the existing file.
Writes benchmarks/results/plan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "plan.json"
DIALOGSUM_METHODS = ("lora", "full")
DIALOGSUM_TOLERANCE = 0.20  # issue 23: the estimate within 20 % of the measured peak
CASES = [
    ("tiny:llama", "inference", 4, 128),
    ("tiny:llama", "lora", 4, 128),
    ("tiny:llama", "full", 4, 128),
    ("packaged:smollm2-135m-instruct", "inference", 1, 96),
    ("packaged:smollm2-135m-instruct", "inference", 8, 96),
    ("packaged:smollm2-135m-instruct", "lora", 4, 256),
    ("packaged:smollm2-135m-instruct", "full", 4, 256),
]


def finetune_child(workdir: str, method: str) -> None:
    """In a fresh process: one epoch of ``method`` on 400 DialogSum rows; prints what the run reported."""
    from benchmarks.finetune_dialogsum import make_project
    from odyssey.adapt import finetune

    project = make_project(Path(workdir), max_seq_len=512, n_train=400)
    started = time.perf_counter()
    res = finetune(project, method=method, evaluate=False)
    print(
        json.dumps(
            {
                "estimate_gb": res.memory_estimate_gb,
                "peak_gb": res.peak_memory_gb,
                "steps": res.steps,
                "train_tokens": res.tokens,
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


def dialogsum_case(workdir: Path, method: str) -> dict:
    folder = workdir / method
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), "--finetune-child", str(folder), method],
        capture_output=True,
        text=True,
        env={**os.environ, "ODYSSEY_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    if out.returncode != 0:
        raise SystemExit(f"the {method} fine-tune failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = got["estimate_gb"] / got["peak_gb"]
    case = {
        "model": "packaged:smollm2-135m-instruct",
        "method": method,
        "rows": 400,
        **got,
        "memory_ratio": round(ratio, 3),
        "within_tolerance": abs(ratio - 1) <= DIALOGSUM_TOLERANCE,
    }
    print(
        f"DialogSum 400 rows {method:5s}: estimate {got['estimate_gb']:.2f} GB vs measured peak "
        f"{got['peak_gb']:.2f} GB (x{ratio:.2f}), {got['steps']} steps in {got['wall_s']:.0f} s",
        flush=True,
    )
    return case


def synthetic_cases(keep_probe: bool) -> dict:
    from odyssey.select.planner import probe, runtime_gb
    from odyssey.select.validate import compare

    measured = probe(refresh=not keep_probe)
    runtime = runtime_gb(refresh=not keep_probe)
    cases = []
    for ref, method, batch, seq in CASES:
        case = compare(ref, method, batch, seq, steps=3, measured_probe={**measured, "runtime_gb": runtime})
        cases.append(case)
        print(
            f"{ref:34s} {method:9s} b={batch} s={seq}: memory {case['predicted_peak_gb']:.3f} vs "
            f"{case['measured_peak_gb']:.3f} GB (x{case['memory_ratio']:.2f}); tokens/s "
            f"{case['predicted_tokens_per_s']:.1f} vs {case['measured_tokens_per_s']:.1f} (x{case['speed_ratio']:.2f})",
            flush=True,
        )
    mem = [abs(c["memory_ratio"] - 1) for c in cases]
    speed = [max(c["speed_ratio"], 1 / c["speed_ratio"]) for c in cases]
    return {
        "machine": {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "probe": {k: v for k, v in measured.items()},
        "runtime_gb": runtime,
        "tolerance": {"memory_relative": 0.35, "speed_factor": 3.0, "dialogsum_memory_relative": DIALOGSUM_TOLERANCE},
        "summary": {
            "max_memory_error": round(max(mem), 3),
            "max_speed_factor": round(max(speed), 3),
            "memory_within_tolerance": all(m <= 0.35 for m in mem),
            "speed_within_tolerance": all(s <= 3.0 for s in speed),
        },
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-probe", action="store_true")
    parser.add_argument("--cases", choices=["all", "dialogsum"], default="all")
    parser.add_argument("--dialogsum", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workdir", default="/tmp/odyssey-plan-dialogsum", help="the DialogSum projects")
    parser.add_argument("--finetune-child", nargs=2, metavar=("WORKDIR", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if args.finetune_child:
        finetune_child(*args.finetune_child)
        return
    started = time.perf_counter()
    payload = (
        json.loads(OUT.read_text()) if args.cases == "dialogsum" and OUT.exists() else synthetic_cases(args.keep_probe)
    )
    if args.dialogsum:
        workdir = Path(args.workdir)
        if workdir.exists():
            import shutil

            shutil.rmtree(workdir)  # a fresh store and no checkpoints: every case trains from the start
        cases = [dialogsum_case(workdir, m) for m in DIALOGSUM_METHODS]
        payload["dialogsum_finetune"] = {
            "command": "python benchmarks/plan.py " + " ".join(sys.argv[1:]),
            "data": "../shared/data/dialogsum/dialogsum.dev.jsonl rows 0-399, max_seq_len 512, 1 epoch",
            "cases": cases,
            "max_memory_error": round(max(abs(c["memory_ratio"] - 1) for c in cases), 3),
            "within_tolerance": all(c["within_tolerance"] for c in cases),
        }
    payload["wall_s"] = round(time.perf_counter() - started, 1)
    OUT.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload["summary"], indent=2))
    if "dialogsum_finetune" in payload:
        print(json.dumps({k: v for k, v in payload["dialogsum_finetune"].items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
