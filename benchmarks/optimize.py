"""Optimize stage on SmolLM2-135M-Instruct and DialogSum: quantization, distillation, pruning.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/optimize.py [--parts quant,int8torchao,int8wo,gguf,teacher,prune,distill,retime]
        [--n-eval 100] [--teacher-steps 60] [--distill-steps 80] [--recover-steps 40] [--project DIR]

Data: ../shared/data/dialogsum (500 validation rows): the first 400 train (teacher fine-tune,
distillation, pruning recovery and calibration), the last 100 are evaluated (the test split).
Everything is measured by the stage's own harness (``odyssey.optimize.measure``: a fresh process
per model; size, peak RSS, prefill/decode tok/s, p50/p95 latency, ROUGE) beside its parent, and
the decode speed-up once more with parent and candidate in one process, timed in 9 alternating
rounds. ``--parts retime`` adds such a paired sample later; the headline ``*_speedup`` figures are
the median of a candidate's paired samples (``*_paired`` lists them); ``*_speedup_separate`` divides
the per-process figures:

- int8 (``--to int8``: int8 weights + dynamic int8 activations on PyTorch's x86 engine) vs the fp32
  model; with ``--parts int8torchao,int8wo`` also torchao's int8 methods;
- GGUF q8_0 and q4_k_m (llama.cpp converter + llama-quantize) vs the f16 GGUF size, measured on
  llama.cpp (decode speeds are llama.cpp vs torch: different engines, labelled as such);
- a LoRA SFT teacher (the shared training loop) vs zero-shot, then a half-depth student (15 of 30
  layers, initialised from the teacher) distilled from it: speed-up and the share of the teacher's
  ROUGE-L gain over zero-shot it keeps;
- structured pruning at 25 % of the teacher (MLP neurons by default; ``--prune-target heads|layers``)
  with a LoRA recovery fine-tune.

Writes benchmarks/results/optimize.json after every part (a partial run still leaves its numbers).
The project folder is kept (default /tmp/odyssey-bench-optimize): a re-run reuses the measured parents.
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
RESULTS = ROOT / "benchmarks" / "results" / "optimize.json"
MODEL = "packaged:smollm2-135m-instruct"

SPEC = """name: bench-optimize
version: 1
scope:
  task: summarization
  data:
    source: {{train: data/train.jsonl, validation: data/validation.jsonl, test: data/test.jsonl}}
    fields: {{input: dialogue, target: summary, id: fname}}
  metrics: [rouge1, rouge2, rougeL]
  gates:
    rougeL: ">= 0.20"
  constraints:
    memory_gb: 2
    p95_latency_ms: 20000
    hardware: cpu
models:
  - {model}
evaluate:
  batch_size: 8
  generation: {{max_new_tokens: {max_new}}}
optimize:
  start_from: {model}
  measure: {{split: test, limit: {n_eval}, speed_prompt_tokens: 256, speed_new_tokens: 32, speed_batch: 8,
            paired_rounds: 9}}
  distill: {{steps: {distill_steps}, batch_size: 4, learning_rate: 0.0001, max_length: 384, temperature: 2.0, alpha: 0.5}}
  prune: {{calibration_examples: 32, max_length: 384, recover_batch_size: 4, recover_learning_rate: 0.0002}}
"""


def setup(project_dir: Path, args) -> Path:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    data = project_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:400]), ("validation", rows[400:416]), ("test", rows[400:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (project_dir / "odyssey.yaml").write_text(
        SPEC.format(model=MODEL, n_eval=args.n_eval, max_new=args.max_new_tokens, distill_steps=args.distill_steps)
    )
    return project_dir


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(results: dict) -> None:
    summarize_paired(results)  # the headline speed-ups are derived from the runs at every write
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")


def side_by_side(m: dict, comparison: dict) -> dict:
    keys = (
        "size_mb",
        "peak_rss_gb",
        "load_rss_gb",
        "prefill_tok_s",
        "decode_tok_s",
        "decode_tok_s_batched",
        "p50_latency_ms",
        "p95_latency_ms",
        "n_params",
        "backend",
    )
    out = {}
    for who in ("parent", "candidate"):
        out[who] = {k: m[who].get(k) for k in keys}
        out[who].update({k: round(v, 4) for k, v in m[who]["metrics"].items()})
    out["comparison"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in comparison.items()}
    return out


def line(name: str, entry: dict) -> str:
    c, p, m = entry["comparison"], entry["parent"], entry["candidate"]
    return (
        f"{name:<22} size {m['size_mb']:.0f} MB (×{c.get('size_ratio') or 0:.2f})  decode {m['decode_tok_s']:.1f} tok/s "
        f"(×{c.get('decode_speedup') or 0:.2f}; paired ×{c.get('decode_speedup_paired') or 0:.2f})  p95 {m['p95_latency_ms']:.0f} ms (parent {p['p95_latency_ms']:.0f})  "
        f"ΔROUGE-1/2/L {c.get('rouge1_change', 0):+.4f}/{c.get('rouge2_change', 0):+.4f}/{c.get('rougeL_change', 0):+.4f}"
    )


def make_teacher(project, steps: int) -> str:
    """A LoRA SFT of the base model on the 400 training rows (the shared loop), merged: the teacher."""
    from odyssey.models import load
    from odyssey.optimize.common import resolve_parent, save_model
    from odyssey.optimize.pruning import recover
    from odyssey.optimize.record import measure_and_record

    name = "smollm2:sft-teacher"
    existing = project.store.candidate(name)
    if existing and Path(existing["model_ref"]).exists():
        return name
    base = resolve_parent(project, MODEL)
    with project.store.run("optimize", project.spec.as_dict(), {"action": "benchmark-teacher", "steps": steps}) as run:
        loaded = load(MODEL, dtype="float32")
        spec = project.spec.optimize.prune.model_copy(update={"recover_lora_r": 16, "recover_learning_rate": 3e-4})
        rec = recover(
            loaded.model,
            loaded.tokenizer,
            project,
            base.prompt,
            steps,
            spec,
            project.state_dir / "optimize" / "bench-teacher",
            resume=True,
        )
        out = save_model(
            rec.pop("model"), loaded.tokenizer, run.artifacts_dir / "teacher", {"method": "lora-sft", "steps": steps}
        )
        config = {"prompt": base.prompt.as_dict(), "method": "lora-sft (benchmark teacher)", "training": rec}
        cand_id = project.store.upsert_candidate(name, "adapt", str(out), config, base.id, run.id)
        measure_and_record(project, run, cand_id, name, str(out), base, {"method": "lora-sft"})
    return name


def stream_gb_s() -> float:
    """How fast this machine streams weights right now: 150 fp32 matrix-vector products over 530 MB
    (SmolLM2's projection shapes), best of 3, in GB/s. Recorded with each paired sample, because a
    memory-bound speed-up depends on how contended memory is when it is measured."""
    import torch

    weights = [torch.randn(1536, 576) for _ in range(150)]
    x = torch.randn(1, 576)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            t = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - t)
    return sum(w.numel() * 4 for w in weights) / best / 1e9


def retime(project, results: dict, only: list[str]) -> None:
    """``--parts retime``: the paired decode test again for every transformers candidate of the
    project with a parent, without re-running quality: one more sample of the speed-up, taken now.
    Samples accumulate in ``results["paired_samples"][candidate]`` with the time and both speeds, so
    the spread across the machine's states is on record beside the headline."""
    import statistics

    from odyssey.optimize.common import is_gguf_ref, resolve_parent
    from odyssey.optimize.measure import measure_paired, settings_for

    store = project.store
    candidates = store.candidates()
    names = {c["id"]: c["name"] for c in candidates}
    for cand in candidates:
        if cand["stage"] != "optimize" or not cand["parent_id"] or is_gguf_ref(cand["model_ref"]):
            continue
        if not Path(cand["model_ref"]).exists() or (only and cand["name"] not in only):
            continue
        parent = resolve_parent(project, names[cand["parent_id"]])
        probe = stream_gb_s()
        paired = measure_paired(
            project,
            parent.model_ref,
            cand["model_ref"],
            parent.prompt,
            settings=settings_for(project),
            label=cand["name"],
        )
        sample = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "project": str(project.root),
            "parent": parent.name,
            "decode_speedup": round(paired["decode_speedup"], 4),
            "rounds": paired["rounds"],
            "stream_gb_s_before": round(probe, 1),
            "parent_decode_tok_s": round(statistics.median(paired["parent_decode_tok_s"]), 2),
            "candidate_decode_tok_s": round(statistics.median(paired["candidate_decode_tok_s"]), 2),
            "round_ratios": [round(r, 3) for r in paired["round_ratios"]],
        }
        results.setdefault("paired_samples", {}).setdefault(cand["name"], []).append(sample)
        save(results)
        print(
            f"{cand['name']:<40} paired ×{sample['decode_speedup']:.2f}  ({sample['candidate_decode_tok_s']:.1f} vs "
            f"{sample['parent_decode_tok_s']:.1f} tok/s, {sample['rounds']} rounds)",
            flush=True,
        )


def summarize_paired(results: dict) -> None:
    """The headline speed-ups: the median of every paired sample of the goal's candidate (its
    measurement run's paired test and each ``--parts retime``), with their spread and the parent's
    speed at each, so a figure taken on a slow (memory-contended) machine is visible as such. Why
    paired: the separate-process ratio (``*_separate``, the fallback when nothing was paired) divides
    speeds taken minutes apart, or a stored parent's, on a machine whose speed drifts within the hour."""
    import statistics

    goals = {
        "int8": ("int8_decode_speedup", results.get("int8_method")),
        "prune": ("prune_speedup", f"prune-{results.get('prune_target', 'mlp')}-25"),
        "distill": (
            "distill_speedup",
            "distill-15-of-30" + ("-bi" if results.get("distill_student_init") == "block-influence" else ""),
        ),
    }
    for goal, (key, run_key) in goals.items():
        entry = results.get("runs", {}).get(run_key)
        if not entry:
            continue
        name = entry.get("candidate_name")
        samples = []
        paired = (entry.get("comparison") or {}).get("paired_speed")
        if paired:
            samples.append(
                {
                    "at": entry.get("measured_at"),
                    "decode_speedup": paired["decode_speedup"],
                    "parent_decode_tok_s": statistics.median(paired["parent_decode_tok_s"]),
                }
            )
        samples += results.get("paired_samples", {}).get(name, []) if name else []
        if not samples:
            results[key] = entry["comparison"]["decode_speedup"]
            continue
        ratios = [s["decode_speedup"] for s in samples]
        results[f"{goal}_paired"] = {
            "candidate": name,
            "n": len(ratios),
            "median": round(statistics.median(ratios), 4),
            "min": round(min(ratios), 4),
            "max": round(max(ratios), 4),
            "samples": [(s["at"], round(s["decode_speedup"], 3), round(s["parent_decode_tok_s"], 1)) for s in samples],
        }
        results[key] = results[f"{goal}_paired"]["median"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="gguf,gguf4,gguf4nl,quant,teacher,prune,distill")
    parser.add_argument("--n-eval", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--teacher-steps", type=int, default=60)
    parser.add_argument("--distill-steps", type=int, default=80)
    parser.add_argument("--recover-steps", type=int, default=40)
    parser.add_argument(
        "--prune-target",
        default="mlp",
        choices=["mlp", "heads", "layers"],
        help="what the 25 %% structured pruning removes: MLP neurons, attention heads or whole layers",
    )
    parser.add_argument(
        "--student-init",
        default="every-other",
        choices=["every-other", "block-influence"],
        help="which 15 teacher layers the distilled student keeps",
    )
    parser.add_argument("--project", default="/tmp/odyssey-bench-optimize")
    parser.add_argument("--retime", default="", help="with --parts retime: only these candidates (comma-separated)")
    args = parser.parse_args()
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared DialogSum file")
    from odyssey.optimize import distill, prune, quantize
    from odyssey.project import Project

    project = Project.load(setup(Path(args.project), args))
    parts = set(args.parts.split(","))
    results = load_results()
    if parts - {"retime", "summarize"}:  # a re-timing only adds samples
        results.update(
            {
                "model": MODEL,
                "data": "DialogSum validation: rows 0-399 train, 400-499 evaluated",
                "n_eval": args.n_eval,
                "max_new_tokens": args.max_new_tokens,
                "machine": f"{os.cpu_count()} CPU cores",
            }
        )
    results.setdefault("runs", {})
    started = time.perf_counter()

    def record(key: str, entry: dict) -> None:
        # Parts are re-run separately (--parts): each entry says when, as the machine may differ.
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["runs"][key] = entry
        results["wall_s"] = round(time.perf_counter() - started, 1)
        save(results)
        print(line(key, entry), flush=True)

    if "gguf" in parts:
        for method in ("gguf:q8_0", "gguf:q4_k_m"):
            r = quantize(project, method, start_from=MODEL)
            entry = side_by_side(r.measurement, r.comparison)
            entry["f16_size_mb"] = r.extra["f16_size_mb"]
            entry["size_ratio_vs_f16"] = r.extra["size_ratio_vs_f16"]
            record(method, entry)
        results["gguf_q4_size_ratio"] = results["runs"]["gguf:q4_k_m"]["size_ratio_vs_f16"]
        results["gguf_q8_size_ratio"] = results["runs"]["gguf:q8_0"]["size_ratio_vs_f16"]
        save(results)

    # q4_k_m with a 4-bit type instead of llama.cpp's q5_0 for the tensors k-quants cannot hold:
    # q4_0 (one scale per 32 weights) or iq4_nl (the same size, a non-uniform 4-bit grid).
    for part, fallback in (("gguf4", "q4_0"), ("gguf4nl", "iq4_nl")):
        if part not in parts:
            continue
        r = quantize(project, "gguf:q4_k_m", start_from=MODEL, gguf_fallback=fallback)
        entry = side_by_side(r.measurement, r.comparison)
        entry["f16_size_mb"] = r.extra["f16_size_mb"]
        entry["size_ratio_vs_f16"] = r.extra["size_ratio_vs_f16"]
        record(f"gguf:q4_k_m+{fallback}", entry)
        results[f"gguf_q4_fallback_{fallback}_size_ratio"] = entry["size_ratio_vs_f16"]
        save(results)

    # "quant": `--to int8`, which on this x86 CPU is int8-x86 (PyTorch's FBGEMM/oneDNN engine).
    # "int8torchao" / "int8wo": the torchao methods (slower than fp32 here; int8-torchao takes long).
    if "retime" in parts:
        retime(project, results, [n for n in args.retime.split(",") if n])

    int8_methods = [
        m
        for part, m in (("quant", "int8"), ("int8torchao", "int8-torchao"), ("int8wo", "int8-weight-only"))
        if part in parts
    ]
    for method in int8_methods:
        r = quantize(project, method, start_from=MODEL)
        record(r.method, {**side_by_side(r.measurement, r.comparison), "candidate_name": r.candidate})
    runs = results["runs"]
    int8 = "int8-x86" if "int8-x86" in runs else "int8-torchao" if "int8-torchao" in runs else None
    if int8:
        c = runs[int8]["comparison"]
        results["int8_method"] = int8
        results["int8_decode_speedup_separate"] = c["decode_speedup"]
        results["int8_rougeL_drop"] = -c["rougeL_change"]
    for name in ("int8-torchao", "int8-weight-only"):
        if name in runs:
            key = name.replace("-", "_")
            results[f"{key}_decode_speedup"] = runs[name]["comparison"]["decode_speedup"]
            results[f"{key}_rougeL_drop"] = -runs[name]["comparison"]["rougeL_change"]
    save(results)

    teacher = None
    if parts & {"teacher", "prune", "distill"}:
        teacher = make_teacher(project, args.teacher_steps)
        from odyssey.store.optimize import latest_measurement

        store = project.store
        t_m = latest_measurement(store, store.candidate(teacher)["id"])
        z_m = latest_measurement(store, store.candidate(resolve_name(project))["id"])
        results["teacher"] = {
            "name": teacher,
            "steps": args.teacher_steps,
            "rougeL": t_m["metrics"]["rougeL"],
            "zero_shot_rougeL": z_m["metrics"]["rougeL"],
            "decode_tok_s": t_m["decode_tok_s"],
            "p95_latency_ms": t_m["p95_latency_ms"],
        }
        save(results)
        print(f"teacher rougeL {t_m['metrics']['rougeL']:.4f} vs zero-shot {z_m['metrics']['rougeL']:.4f}", flush=True)

    if "prune" in parts:
        r = prune(
            project,
            structured=True,
            sparsity=0.25,
            target=args.prune_target,
            recover_steps=args.recover_steps,
            start_from=teacher,
            resume=True,
        )
        entry = side_by_side(r.measurement, r.comparison)
        entry["recovery"] = {k: v for k, v in (r.recovery or {}).items()}
        entry["details"] = r.details
        entry["candidate_name"] = r.candidate
        record(f"prune-{args.prune_target}-25", entry)
        results["prune_target"] = args.prune_target
        results["prune_speedup_separate"] = entry["comparison"]["decode_speedup"]
        results["prune_rougeL_drop"] = -entry["comparison"]["rougeL_change"]
        save(results)

    if "distill" in parts:
        r = distill(
            project,
            teacher=teacher,
            student_layers=15,
            steps=args.distill_steps,
            resume=True,
            student_init=args.student_init,
        )
        entry = side_by_side(r.measurement, r.comparison)
        entry["training"] = r.training
        entry["kd_positions"] = project.spec.optimize.distill.positions
        entry["student_init"] = args.student_init
        entry["candidate_name"] = r.candidate
        record("distill-15-of-30" + ("-bi" if args.student_init == "block-influence" else ""), entry)
        t = results["teacher"]
        student = entry["candidate"]["rougeL"]
        gain = t["rougeL"] - t["zero_shot_rougeL"]
        entry["gain_kept"] = (student - t["zero_shot_rougeL"]) / gain if gain > 0 else None
        save(results)
        results["distill_speedup_separate"] = entry["comparison"]["decode_speedup"]
        results["distill_gain_kept"] = entry["gain_kept"]
        results["distill_note"] = (
            "gain kept = (student ROUGE-L - zero-shot) / (teacher ROUGE-L - zero-shot)"
            if gain > 0
            else "the teacher did not beat zero-shot: gain kept is undefined"
        )
        save(results)

    from odyssey.optimize import report

    rep = report(project)
    results["report"] = rep.paths
    results["wall_s"] = round(time.perf_counter() - started, 1)
    save(results)
    print(
        json.dumps(
            {k: v for k, v in results.items() if k not in {"runs", "teacher", "report", "paired_samples"}}, indent=2
        )
    )


def resolve_name(project) -> str:
    from odyssey.optimize.common import resolve_parent

    return resolve_parent(project, MODEL).name


if __name__ == "__main__":
    main()
