"""Why torchao int8 is not faster than fp32 on this CPU: the kernels, measured without a model around them.

    flock /tmp/odyssey-heavy.lock .venv/bin/python benchmarks/int8_kernels.py [--max-autotune]

The optimize benchmark (benchmarks/optimize.py) found torchao int8 slower than fp32 for SmolLM2 decoding
on this 2-core CPU. This benchmark takes the model away and times the matrix products alone, at the
shapes of SmolLM2-135M (hidden 576, MLP 1536, 3 KV heads of 64, vocabulary 49152), against the peer
that decides the goal: fp32 ``F.linear`` (MKL).

1. One product per shape at M = 1 (one decoding token) and M = 64 (a prefill chunk): fp32; torchao
   ``Int8WeightOnlyConfig`` (eager: it converts the int8 weight to fp32 on every call, then multiplies);
   ``aten._weight_int8pack_mm`` (PyTorch's fused int8-weight CPU kernel, what inductor lowers the
   weight-only pattern to); torchao ``Int8DynamicActivationInt8WeightConfig`` (int8 x int8 via
   ``torch._int_mm``).
2. A 30-block stack of SmolLM2's projections (plus the 49152-row output layer), one token through it,
   eager and under ``torch.compile`` (``--max-autotune`` adds inductor's CPU GEMM templates): decoding
   without transformers' Python overhead, fp32 vs int8 weight-only.
3. The ceiling (Amdahl): the real model's fp32 decode time per token (transformers ``generate``, greedy,
   batch 1) against the time its projections' fp32 kernels take per token (the M = 1 rows of part 1,
   counted per layer). Int8 can only shrink the kernel share, so even a kernel that took no time could
   not make decoding faster than decode / (decode - kernels); the same with the fastest int8 kernel
   measured per shape gives the bound these kernels allow.

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

    rows = []
    for out_f, in_f in ((HIDDEN, HIDDEN), (KV, HIDDEN), (MLP, HIDDEN), (HIDDEN, MLP), (VOCAB, HIDDEN)):
        lin = torch.nn.Linear(in_f, out_f, bias=False)
        wo, dyn = copy.deepcopy(lin), copy.deepcopy(lin)
        quantize_(wo, Int8WeightOnlyConfig())
        quantize_(dyn, Int8DynamicActivationInt8WeightConfig())
        w = lin.weight.detach()
        scale = w.abs().amax(1) / 127
        q = torch.round(w / scale[:, None]).to(torch.int8)
        for m in (1, 64):
            x = torch.randn(m, in_f)
            reps = 20 if out_f == VOCAB else 200
            with torch.inference_mode():
                fp32 = timed_ms(lambda: lin(x), reps=reps)
                row = {"shape": f"{out_f}x{in_f}", "m": m, "fp32_ms": round(fp32, 4)}
                for key, fn in (("torchao_int8_weight_only", lambda: wo(x)),
                                ("aten_weight_int8pack_mm", lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale)),
                                ("torchao_int8_dynamic", lambda: dyn(x))):
                    ms = timed_ms(fn, reps=reps)
                    row[f"{key}_ms"] = round(ms, 4)
                    row[f"{key}_speedup"] = round(fp32 / ms, 3)
            rows.append(row)
            print(f"{row['shape']:>10} m={m:<3} fp32 {fp32:8.3f} ms | " + " | ".join(
                f"{k} {row[k + '_speedup']:.2f}x" for k in ("torchao_int8_weight_only", "aten_weight_int8pack_mm",
                                                            "torchao_int8_dynamic")), flush=True)
    return rows


def stack(torch, compile_mode: str | None) -> dict:
    """One token through SmolLM2's 30 blocks of projections and the output layer (no attention math:
    at one token it is a few small products, and the weights are what int8 shrinks)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    F = torch.nn.functional

    class Blocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({
                "q": torch.nn.Linear(HIDDEN, HIDDEN, bias=False), "k": torch.nn.Linear(HIDDEN, KV, bias=False),
                "v": torch.nn.Linear(HIDDEN, KV, bias=False), "o": torch.nn.Linear(HIDDEN, HIDDEN, bias=False),
                "gate": torch.nn.Linear(HIDDEN, MLP, bias=False), "up": torch.nn.Linear(HIDDEN, MLP, bias=False),
                "down": torch.nn.Linear(MLP, HIDDEN, bias=False)}) for _ in range(LAYERS))
            self.head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)

        def forward(self, x):
            for b in self.blocks:
                h = F.rms_norm(x, (HIDDEN,))
                attn = b["q"](h) + F.pad(b["k"](h) * b["v"](h), (0, HIDDEN - KV))
                x = x + b["o"](attn)
                h = F.rms_norm(x, (HIDDEN,))
                x = x + b["down"](F.silu(b["gate"](h)) * b["up"](h))
            return self.head(F.rms_norm(x, (HIDDEN,)))

    torch.manual_seed(0)
    fp32 = Blocks().eval()
    int8 = copy.deepcopy(fp32)
    quantize_(int8, Int8WeightOnlyConfig())
    x = torch.randn(1, 1, HIDDEN)
    out = {}
    with torch.inference_mode():
        ref = fp32(x)
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
        if compile_mode:
            out["int8_compiled_speedup_vs_fp32_compiled"] = round(
                out["fp32_compiled_ms"] / out["int8_weight_only_compiled_ms"], 3)
            out["int8_compiled_speedup_vs_fp32_eager"] = round(out["fp32_eager_ms"] / out["int8_weight_only_compiled_ms"], 3)
    return out


# Products per decoded token: per layer q and o (576x576), k and v (192x576), gate and up (1536x576),
# down (576x1536); once the output layer (49152x576).
PER_LAYER = {f"{HIDDEN}x{HIDDEN}": 2, f"{KV}x{HIDDEN}": 2, f"{MLP}x{HIDDEN}": 2, f"{HIDDEN}x{MLP}": 1}


def decode_ceiling(torch, rows: list[dict], model_ref: str, new_tokens: int = 64) -> dict:
    from odyssey.models import load

    loaded = load(model_ref, dtype="float32")
    tok, model = loaded.tokenizer, loaded.model.eval()
    cfg = model.config
    if (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers) != (HIDDEN, MLP, VOCAB, LAYERS):
        raise SystemExit(f"{model_ref} does not have SmolLM2-135M's shapes; the kernel times would not apply")
    ids = tok("#Person1#: Did you finish the report? #Person2#: Not yet, I need one more day.\nSummary:",
              return_tensors="pt")

    def generate(n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
        return time.perf_counter() - t

    generate(4)
    first = min(generate(1) for _ in range(3))  # prefill + one token
    full = min(generate(new_tokens + 1) for _ in range(3))
    decode_ms = (full - first) / new_tokens * 1e3
    m1 = {r["shape"]: r for r in rows if r["m"] == 1}
    count = {**{k: v * LAYERS for k, v in PER_LAYER.items()}, f"{VOCAB}x{HIDDEN}": 1}
    fp32_ms = sum(m1[k]["fp32_ms"] * n for k, n in count.items())
    best_ms = sum(min([m1[k]["fp32_ms"]] + [m1[k][f] for f in m1[k] if f.endswith("_ms") and f != "fp32_ms"]) * n
                  for k, n in count.items())
    rest = decode_ms - fp32_ms
    return {"model": model_ref, "decode_ms_per_token": round(decode_ms, 2), "decode_tok_s": round(1e3 / decode_ms, 1),
            "fp32_kernel_ms_per_token": round(fp32_ms, 2), "kernel_share": round(fp32_ms / decode_ms, 3),
            "max_speedup_if_kernels_took_no_time": round(decode_ms / rest, 3),
            "max_speedup_with_fastest_measured_kernel_per_shape": round(decode_ms / (rest + best_ms), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-autotune", action="store_true", help="also compile with mode='max-autotune'")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct",
                        help="the model whose decode time sets the ceiling (part 3); 'none' skips it")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import torchao

    torch.set_num_threads(args.threads)
    results = {"machine": f"{os.cpu_count()} CPU cores, {platform.machine()}", "threads": args.threads,
               "torch": torch.__version__, "torchao": torchao.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "peer": "fp32 F.linear (MKL)", "per_shape": per_shape(torch)}
    modes = ["default"] + (["max-autotune"] if args.max_autotune else [])
    results["stack"] = {}
    for mode in modes:
        s = stack(torch, mode)
        results["stack"][mode] = s
        print(f"stack ({LAYERS} blocks + head, 1 token), compile mode {mode}: " + ", ".join(f"{k} {v}" for k, v in s.items()),
              flush=True)
    m1 = [r for r in results["per_shape"] if r["m"] == 1]
    results["decode_shapes_best_int8_speedup"] = max(
        max(r[k] for k in r if k.endswith("_speedup")) for r in m1)
    if args.model != "none":
        c = decode_ceiling(torch, results["per_shape"], args.model)
        results["decode_ceiling"] = c
        print(f"decode {c['decode_ms_per_token']} ms/token, of which fp32 projection kernels {c['fp32_kernel_ms_per_token']} ms "
              f"({100 * c['kernel_share']:.0f} %): int8 could at most make decoding "
              f"{c['max_speedup_if_kernels_took_no_time']:.2f}x faster (kernels taking no time), "
              f"{c['max_speedup_with_fastest_measured_kernel_per_shape']:.2f}x with the fastest kernel measured", flush=True)
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"best int8 speed-up over fp32 at one decoding token, any shape, any kernel: "
          f"{results['decode_shapes_best_int8_speedup']:.2f}x -> {RESULTS}")


if __name__ == "__main__":
    main()
