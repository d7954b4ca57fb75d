"""Int8 against fp32 on this CPU: the kernels alone, a stack of them as big as the model, and the model.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/int8_kernels.py [--max-autotune]

At the shapes of SmolLM2-135M (hidden 576, MLP 1536, 3 KV heads of 64, vocabulary 49152), against the
peer that decides the goal, fp32 ``F.linear`` (MKL):

1. One product per shape at M = 1 (one decoding token) and M = 64 (a prefill chunk), the same small
   weight again and again, so it stays in the caches: fp32; torchao ``Int8WeightOnlyConfig``;
   ``aten._weight_int8pack_mm`` (what inductor lowers the weight-only pattern to); torchao
   ``Int8DynamicActivationInt8WeightConfig`` (``torch._int_mm``); ``Int8Linear`` as ``--to int8`` runs
   it on x86 CPUs: PyTorch's x86 engine (``quantized::linear_dynamic``, FBGEMM/oneDNN) at M = 1, and
   above 16 rows (M = 64) the fp32 product on its dequantized weight, not the engine.
2. A stack of SmolLM2's 30 blocks of projections plus the output layer, distinct weights (about
   540 MB in fp32, more than the caches), one token through it: what decoding asks of memory. Eager for
   every kernel; under ``torch.compile`` for fp32 and torchao weight-only (``--max-autotune`` adds
   inductor's CPU GEMM templates).
3. The model: SmolLM2 decoding (transformers ``generate``, greedy, batch 1), fp32 against
   ``--to int8`` (x86 engine) in the same run, and torch.profiler's share of fp32 decoding spent in the
   projections' matrix products (the part int8 can shrink).

Part 1 alone misleads: with its weight in the caches an fp32 product is far faster than in a model
whose 540 MB of weights stream from memory once per token. An earlier version of this benchmark
summed part 1's times, found the products to be 20 % of decoding and concluded int8 could not pass
1.25x; the profile (part 3) puts them at about 70 %, and the model with x86 int8 runs faster than that
bound.

Ratios are fp32 time / int8 time (> 1: int8 faster). Results: benchmarks/results/int8_kernels.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "int8_kernels.json"
HIDDEN, MLP, KV, VOCAB, LAYERS = 576, 1536, 192, 49152, 30


def timed_ms(fn, *, reps: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def per_shape(torch) -> list[dict]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    from odyssey.models import x86_int8

    rows = []
    for out_f, in_f in ((HIDDEN, HIDDEN), (KV, HIDDEN), (MLP, HIDDEN), (HIDDEN, MLP), (VOCAB, HIDDEN)):
        lin = torch.nn.Linear(in_f, out_f, bias=False)
        wo, dyn = copy.deepcopy(lin), copy.deepcopy(lin)
        quantize_(wo, Int8WeightOnlyConfig())
        quantize_(dyn, Int8DynamicActivationInt8WeightConfig())
        w = lin.weight.detach()
        scale = w.abs().amax(1) / 127
        q = torch.round(w / scale[:, None]).to(torch.int8)
        x86 = x86_int8.Int8Linear.from_linear(lin)
        for m in (1, 64):
            x = torch.randn(m, in_f)
            reps = 20 if out_f == VOCAB else 200
            with torch.inference_mode():
                fp32 = timed_ms(lambda: lin(x), reps=reps)
                row = {"shape": f"{out_f}x{in_f}", "m": m, "fp32_ms": round(fp32, 4)}
                for key, fn in (
                    ("torchao_int8_weight_only", lambda: wo(x)),
                    ("aten_weight_int8pack_mm", lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale)),
                    ("torchao_int8_dynamic", lambda: dyn(x)),
                    ("x86_int8_dynamic", lambda: x86(x)),
                ):
                    ms = timed_ms(fn, reps=reps)
                    row[f"{key}_ms"] = round(ms, 4)
                    row[f"{key}_speedup"] = round(fp32 / ms, 3)
            rows.append(row)
            print(
                f"{row['shape']:>10} m={m:<3} fp32 {fp32:8.3f} ms | "
                + " | ".join(
                    f"{k} {row[k + '_speedup']:.2f}x"
                    for k in (
                        "torchao_int8_weight_only",
                        "aten_weight_int8pack_mm",
                        "torchao_int8_dynamic",
                        "x86_int8_dynamic",
                    )
                ),
                flush=True,
            )
    return rows


def stack(torch, compile_mode: str | None) -> dict:
    """One token through SmolLM2's 30 blocks of projections and the output layer (no attention math:
    at one token it is a few small products, and the weights are what int8 shrinks)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    F = torch.nn.functional

    class Blocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(
                torch.nn.ModuleDict(
                    {
                        "q": torch.nn.Linear(HIDDEN, HIDDEN, bias=False),
                        "k": torch.nn.Linear(HIDDEN, KV, bias=False),
                        "v": torch.nn.Linear(HIDDEN, KV, bias=False),
                        "o": torch.nn.Linear(HIDDEN, HIDDEN, bias=False),
                        "gate": torch.nn.Linear(HIDDEN, MLP, bias=False),
                        "up": torch.nn.Linear(HIDDEN, MLP, bias=False),
                        "down": torch.nn.Linear(MLP, HIDDEN, bias=False),
                    }
                )
                for _ in range(LAYERS)
            )
            self.head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)

        def forward(self, x):
            for b in self.blocks:
                h = F.rms_norm(x, (HIDDEN,))
                attn = b["q"](h) + F.pad(b["k"](h) * b["v"](h), (0, HIDDEN - KV))
                x = x + b["o"](attn)
                h = F.rms_norm(x, (HIDDEN,))
                x = x + b["down"](F.silu(b["gate"](h)) * b["up"](h))
            return self.head(F.rms_norm(x, (HIDDEN,)))

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    from odyssey.models import x86_int8

    torch.manual_seed(0)
    fp32 = Blocks().eval()
    int8 = copy.deepcopy(fp32)
    quantize_(int8, Int8WeightOnlyConfig())
    x = torch.randn(1, 1, HIDDEN)
    out = {}
    with torch.inference_mode():
        ref = fp32(x)
        for name, make in (
            ("torchao_int8_dynamic", lambda m: quantize_(m, Int8DynamicActivationInt8WeightConfig())),
            ("x86_int8_dynamic", x86_int8.quantize_model),
        ):
            if compile_mode != "default":
                continue  # eager kernels: timed once, with the default mode's run
            model = copy.deepcopy(fp32)
            make(model)
            out[f"{name}_eager_ms"] = round(timed_ms(lambda: model(x), reps=30), 3)
            out[f"{name}_max_abs_err"] = round((model(x) - ref).abs().max().item(), 4)
            del model
        for name, model in (("fp32", fp32), ("int8_weight_only", int8)):
            out[f"{name}_eager_ms"] = round(timed_ms(lambda: model(x), reps=30), 3)
            if compile_mode:
                t = time.perf_counter()
                compiled = torch.compile(model, mode=compile_mode)
                y = compiled(x)
                out[f"{name}_compile_s"] = round(time.perf_counter() - t, 1)
                out[f"{name}_compiled_ms"] = round(timed_ms(lambda: compiled(x), reps=30), 3)
                out[f"{name}_compiled_max_abs_err"] = round((y - ref).abs().max().item(), 4)
        out["int8_eager_speedup"] = round(out["fp32_eager_ms"] / out["int8_weight_only_eager_ms"], 3)
        for name in ("torchao_int8_dynamic", "x86_int8_dynamic"):
            if f"{name}_eager_ms" in out:
                out[f"{name}_eager_speedup"] = round(out["fp32_eager_ms"] / out[f"{name}_eager_ms"], 3)
        if compile_mode:
            out["int8_compiled_speedup_vs_fp32_compiled"] = round(
                out["fp32_compiled_ms"] / out["int8_weight_only_compiled_ms"], 3
            )
            out["int8_compiled_speedup_vs_fp32_eager"] = round(
                out["fp32_eager_ms"] / out["int8_weight_only_compiled_ms"], 3
            )
    return out


def decode_model(torch, model_ref: str, new_tokens: int = 64) -> dict:
    """fp32 against ``--to int8`` (x86 engine) decoding, and the profiled share of the products."""
    from torch.profiler import ProfilerActivity, profile

    from odyssey.models import load, x86_int8

    loaded = load(model_ref, dtype="float32")
    tok, model = loaded.tokenizer, loaded.model.eval()
    ids = tok(
        "#Person1#: Did you finish the report? #Person2#: Not yet, I need one more day.\nSummary:", return_tensors="pt"
    )

    def decode_ms(m) -> float:
        def generate(n: int) -> float:
            t = time.perf_counter()
            with torch.inference_mode():
                m.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
            return time.perf_counter() - t

        generate(4)
        first = min(generate(1) for _ in range(3))  # prefill + one token
        full = min(generate(new_tokens + 1) for _ in range(3))
        return (full - first) / new_tokens * 1e3

    fp32_ms = decode_ms(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        model.generate(**ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in {"aten::mm", "aten::addmm", "aten::bmm"})
    share = products / total
    # smoothed and folded as `--to int8` does, with statistics from the prompt itself
    int8, _ = x86_int8.smooth_and_check(model, x86_int8.activation_absmax(model, [dict(ids)]), 0.5, dict(ids))
    x86_int8.quantize_model(int8)
    int8_ms = decode_ms(int8)
    return {
        "model": model_ref,
        "fp32_decode_ms_per_token": round(fp32_ms, 2),
        "fp32_decode_tok_s": round(1e3 / fp32_ms, 1),
        "x86_int8_decode_ms_per_token": round(int8_ms, 2),
        "x86_int8_decode_tok_s": round(1e3 / int8_ms, 1),
        "x86_int8_decode_speedup": round(fp32_ms / int8_ms, 3),
        "fp32_product_share_profiled": round(share, 3),
        "max_speedup_if_products_took_no_time": round(1 / (1 - share), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-autotune", action="store_true", help="also compile with mode='max-autotune'")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--model", default="packaged:smollm2-135m-instruct", help="the model decoded in part 3; 'none' skips it"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import torchao

    torch.set_num_threads(args.threads)
    results = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "threads": args.threads,
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "peer": "fp32 F.linear (MKL)",
        "per_shape": per_shape(torch),
    }
    modes = ["default"] + (["max-autotune"] if args.max_autotune else [])
    results["stack"] = {}
    for mode in modes:
        s = stack(torch, mode)
        results["stack"][mode] = s
        print(
            f"stack ({LAYERS} blocks + head, 1 token), compile mode {mode}: "
            + ", ".join(f"{k} {v}" for k, v in s.items()),
            flush=True,
        )
    m1 = [r for r in results["per_shape"] if r["m"] == 1]
    results["decode_shapes_best_int8_speedup"] = max(max(r[k] for k in r if k.endswith("_speedup")) for r in m1)
    if args.model != "none":
        c = decode_model(torch, args.model)
        results["decode"] = c
        print(
            f"decode fp32 {c['fp32_decode_tok_s']} tok/s, x86 int8 {c['x86_int8_decode_tok_s']} tok/s: "
            f"{c['x86_int8_decode_speedup']:.2f}x; the profiled products are {100 * c['fp32_product_share_profiled']:.0f} % "
            f"of fp32 decoding (bound {c['max_speedup_if_products_took_no_time']:.2f}x)",
            flush=True,
        )
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"best int8 speed-up over fp32 at one decoding token, any shape, any kernel: "
        f"{results['decode_shapes_best_int8_speedup']:.2f}x -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
