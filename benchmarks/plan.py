"""The feasibility planner against measurement: predicted vs measured peak memory and tokens/s.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/plan.py

Cases: inference, LoRA and full fine-tuning of SmolLM2-135M and of the tiny Llama, each measured in a
fresh process (peak resident memory = VmHWM; tokens/s over the timed steps). The planner's probe is
re-measured at the start (``--keep-probe`` reuses the cached one). Ratios are predicted / measured.
Writes benchmarks/results/plan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("tiny:llama", "inference", 4, 128),
    ("tiny:llama", "lora", 4, 128),
    ("tiny:llama", "full", 4, 128),
    ("packaged:smollm2-135m-instruct", "inference", 1, 96),
    ("packaged:smollm2-135m-instruct", "inference", 8, 96),
    ("packaged:smollm2-135m-instruct", "lora", 4, 256),
    ("packaged:smollm2-135m-instruct", "full", 4, 256),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep-probe", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    from odyssey.select.planner import probe, runtime_gb
    from odyssey.select.validate import compare

    started = time.perf_counter()
    measured = probe(refresh=not args.keep_probe)
    runtime = runtime_gb(refresh=not args.keep_probe)
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
    payload = {
        "machine": {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "probe": {k: v for k, v in measured.items()},
        "runtime_gb": runtime,
        "tolerance": {"memory_relative": 0.35, "speed_factor": 3.0},
        "summary": {
            "max_memory_error": round(max(mem), 3),
            "max_speed_factor": round(max(speed), 3),
            "memory_within_tolerance": all(m <= 0.35 for m in mem),
            "speed_within_tolerance": all(s <= 3.0 for s in speed),
        },
        "cases": cases,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (ROOT / "benchmarks" / "results" / "plan.json").write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload["summary"], indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
