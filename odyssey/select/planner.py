"""Feasibility planner: will this model train (or serve) on this hardware, and how fast?

Memory, by component: :func:`odyssey.models.memory.job_components`, the one estimate (its docstring
gives each rule and its source), which ``odyssey models`` and ``odyssey finetune`` report too; the
planner adds the runtime its probe measures (what the process holds before any model).

Compute (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1):
- training ~ 6*N FLOPs per token (forward 2N, backward 4N) + 6*layers*seq*hidden for attention;
  LoRA skips the weight gradients of the frozen base: ~ 4*N per token;
- generating ~ 2*N FLOPs per token, but batch-1 decoding reads every weight once per token, so on most
  machines it is bound by memory bandwidth: time/token = max(2N*b/FLOP/s, weight bytes / bandwidth);
- compute-optimal data ~ 20 tokens per parameter (Hoffmann et al. 2022, "Chinchilla"): a pretraining
  budget, reported for reference. A fine-tune's default budget is the project's own training split
  (its tokens x ``adapt.epochs``); without a project, 1M tokens.

The machine's sustained matmul FLOP/s (at several matrix widths), matrix-vector bandwidth and the
framework's per-layer overhead are measured once by :func:`probe` and cached in ``ODYSSEY_HOME``.
Small models are dominated by that overhead (Python and kernel launches per layer), which the FLOP
count alone would miss by orders of magnitude.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.models.hardware import USABLE_FRACTION, Hardware  # noqa: F401  (Hardware re-exported)
from odyssey.models.memory import (
    BYTES_PER_PARAM as BYTES,
    GB,  # noqa: F401  (re-exported)
    METHODS,
    Shape,
    job_components,
    rss_gb,  # noqa: F401  (one implementation; re-exported here)
)
from odyssey.training.lora import TARGET_NAMES as LORA_TARGETS  # noqa: F401  (re-exported: module names LoRA adapts)

TOKENS_PER_PARAM = 20  # Chinchilla's compute-optimal data (pretraining)
DEFAULT_TOKENS = 1_000_000  # generated (inference), or trained when there is no project to count
PROBE_VERSION = 5


# ---- the probe ------------------------------------------------------------------------------------------

PROBE_WIDTHS = (64, 256, 576, 1024, 2048)


def _probe_path() -> Path:
    from odyssey.paths import home

    return home() / "probe.json"


def _probe_key(device: str) -> str:
    import torch

    return (
        f"v{PROBE_VERSION}|{platform.node()}|{platform.machine()}|{device}|threads={torch.get_num_threads()}"
        f"|torch={torch.__version__}"
    )


def _best_time(fn, repeat: int = 3, min_s: float = 0.02) -> float:
    """Best-of-``repeat`` seconds per call, each sample running long enough to time reliably."""
    fn()  # warm up (allocations, kernel choice)
    n, t = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - start
        if t >= min_s or n >= 1 << 16:
            break
        n *= 4
    best = t / n
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def _tiny_llama(layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def _overheads(device: str) -> dict:
    """Framework time that does not scale with FLOPs: per decoded token and per training step, fixed and
    per layer. Measured on 1- and 5-layer 64-wide models whose arithmetic is negligible."""
    import torch

    out = {}
    timings = {}
    for layers in (1, 5):
        model = _tiny_llama(layers).to(device)
        ids = torch.randint(0, 256, (1, 8), device=device)
        gen_kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)

        def decode():
            with torch.inference_mode():
                model.generate(ids, **gen_kwargs)

        per_token = _best_time(decode, repeat=3) / 8
        model.train()
        batch = torch.randint(0, 256, (2, 32), device=device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        timings[layers] = (per_token, _best_time(step, repeat=3))
    for i, name in enumerate(("decode", "train")):
        per_layer = max((timings[5][i] - timings[1][i]) / 4, 0.0)
        out[f"{name}_per_layer_s"] = per_layer
        out[f"{name}_fixed_s"] = max(timings[1][i] - per_layer, 0.0)
    return out


# The calibration model: Llama-shaped like the small models people plan for, but neither SmolLM2's width
# (576), depth (30) nor vocabulary (49,152), so the planner's check on SmolLM2 is not a check on itself.
REFERENCE_SHAPE = dict(
    hidden_size=384,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    vocab_size=32768,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def _calibration(device: str, partial: dict) -> dict:
    """Measured / predicted tokens/s of a real-width reference model, per mode.

    The roofline below (matmul FLOP/s, mat-vec bandwidth, per-layer overheads from 64-wide models) leaves out
    what real models spend besides their matmuls: skinny batched-decode GEMMs, the KV-cache updates and
    logits processing of ``generate``, softmax and norms in training, LoRA's extra small matmuls. Rather than
    model each, one reference model is timed per mode and the ratio scales every prediction of that mode.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from odyssey.training.lora import default_targets, lora_param_count

    torch.manual_seed(0)
    config = LlamaConfig(**REFERENCE_SHAPE)
    model = LlamaForCausalLM(config).to(device).eval()
    targets = default_targets("llama")
    shape = ModelShape(
        ref="reference",
        n_params=sum(p.numel() for p in model.parameters()),
        n_layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads,
        vocab=config.vocab_size,
        context=512,
        tied=True,
        family="decoder-only",
        lora_params=lora_param_count(model, 8, targets),
    )
    hw = Hardware(device=device, cores=partial["threads"], memory_gb=1.0)
    return {
        **_decode_efficiency(model, shape, device, partial, hw),
        **_training_efficiency(config, shape, targets, device, partial, hw),
    }


def _decode_efficiency(model, shape: ModelShape, device: str, partial: dict, hw: Hardware) -> dict:
    """Calibration factors of ``generate`` at batch 1 and 8 (``decode_1``, ``decode_8``)."""
    import torch

    out = {}
    new_tokens, prompt = 16, 48
    for batch in (1, 8):
        ids = torch.randint(5, shape.vocab, (batch, prompt), device=device)

        def decode():
            with torch.inference_mode():
                model.generate(
                    ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
                )

        measured_tps = batch * new_tokens / _best_time(decode, repeat=2)
        predicted, _ = throughput(shape, "inference", batch, prompt + new_tokens, "fp32", partial, hw)
        out[f"decode_{batch}"] = measured_tps / predicted
    return out


def _training_efficiency(config, shape: ModelShape, targets, device: str, partial: dict, hw: Hardware) -> dict:
    """Calibration factors of a training step, full and LoRA (``full``, ``lora``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    out = {}
    batch, seq = 2, 128
    ids = torch.randint(5, config.vocab_size, (batch, seq), device=device)
    for method in ("full", "lora"):
        torch.manual_seed(0)
        trained = LlamaForCausalLM(config).to(device).train()
        if method == "lora":
            # The modules the reference shape's LoRA parameter count (in _calibration) assumes (r 8 on each).
            trained = get_peft_model(trained, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
        optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=1e-5)

        def step():
            loss = trained(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        measured_tps = batch * seq / _best_time(step, repeat=2)
        predicted, _ = throughput(shape, method, batch, seq, "fp32", partial, hw)
        out[method] = measured_tps / predicted
    return out


def _load_cache() -> dict:
    path = _probe_path()
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    return {}


def _save_cache(key: str, value) -> None:
    path = _probe_path()
    cache = _load_cache()
    cache[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2))
    os.replace(tmp, path)


def runtime_gb(refresh: bool = False) -> float:
    """Resident memory of a fresh process that has imported torch and transformers: what every job holds
    before its model (measured once in a subprocess, so this process's own history does not count)."""
    import subprocess
    import sys

    import torch

    key = f"runtime|{platform.node()}|torch={torch.__version__}"
    cache = _load_cache()
    if not refresh and key in cache:
        return cache[key]
    # A real job also pulls in the modeling code, tokenizers and peft, and runs a forward pass once.
    code = (
        "import torch, peft; from odyssey.select.planner import _tiny_llama, rss_gb; "
        "from odyssey.models import load; "
        "m = _tiny_llama(1); m(input_ids=torch.ones(1, 8, dtype=torch.long)); print(rss_gb())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ODYSSEY_QUIET": "1"},
    )
    value = float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else rss_gb()
    _save_cache(key, value)
    return value


def probe(device: str = "cpu", refresh: bool = False) -> dict:
    """Measure this machine once (a few seconds) and cache it: matmul FLOP/s by width, mat-vec bandwidth,
    framework overheads, and the runtime's resident memory."""
    import torch
    import transformers  # noqa: F401  (the runtime a job holds is part of what is measured)

    key = _probe_key(device)
    cache = _load_cache()
    if not refresh and key in cache:
        return cache[key]
    from odyssey import ui

    with ui.status("measuring this machine once (matmul FLOP/s, bandwidth, overheads)"):
        flops = {}
        for width in PROBE_WIDTHS:
            a = torch.randn(512, width, device=device)
            b = torch.randn(width, 4 * width, device=device)
            seconds = _best_time(lambda: torch.mm(a, b))
            flops[str(width)] = 2 * 512 * width * 4 * width / seconds
        big = torch.randn(4096, 4096, device=device)  # 64 MiB: larger than the caches
        vec = torch.randn(4096, 1, device=device)
        seconds = _best_time(lambda: torch.mm(big, vec))
        bandwidth = big.numel() * 4 / seconds
        result = {
            "device": device,
            "threads": torch.get_num_threads(),
            "matmul_flops": flops,
            "matvec_bytes_per_s": bandwidth,
            **_overheads(device),
        }
        result["efficiency"] = _calibration(device, result)
        result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _save_cache(key, result)
    return result


def flops_at(measured: dict, width: int) -> float:
    """Sustained FLOP/s for matmuls ``width`` wide, interpolated in log-space between probed widths."""
    points = sorted((int(k), v) for k, v in measured["matmul_flops"].items())
    if width <= points[0][0]:
        return points[0][1]
    if width >= points[-1][0]:
        return points[-1][1]
    for (w0, f0), (w1, f1) in zip(points, points[1:]):
        if w0 <= width <= w1:
            t = (math.log(width) - math.log(w0)) / (math.log(w1) - math.log(w0))
            return math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0)))
    return points[-1][1]


# ---- the plan -------------------------------------------------------------------------------------------


@dataclass
class ModelShape:
    ref: str
    n_params: int
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    context: int
    tied: bool
    family: str
    lora_params: int = 0
    lora_dropout_inputs: int = 0  # with LoRA dropout: the adapted linears' input widths (memory's lora_dropout)

    @property
    def compute_params(self) -> int:
        """Parameters that do matmul work per token: all but an untied input embedding (a lookup)."""
        return self.n_params if self.tied else max(self.n_params - self.vocab * self.hidden, 1)

    @property
    def head_dim(self) -> float:
        return self.hidden / max(self.n_heads, 1)

    def memory_shape(self) -> Shape:
        return Shape(self.n_params, self.n_layers, self.hidden, self.n_heads, self.n_kv_heads, self.vocab, self.context)


def model_shape(ref: str, root: Path | None = None, lora_r: int = 8, lora_dropout: float = 0.0) -> ModelShape:
    """The numbers the planner needs, from the config alone (the model is built on the meta device).
    ``lora_dropout`` > 0: LoRA's dropout copies of its inputs count (see :mod:`odyssey.models.memory`)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from odyssey.models import FAMILY_DECODER, context_length, family_of, parse_ref, resolve
    from odyssey.training.lora import lora_input_features, lora_param_count

    parsed = parse_ref(ref, root)
    if parsed.kind == "hub":
        config = AutoConfig.from_pretrained(parsed.value)  # small download; raises offline
    else:
        config = AutoConfig.from_pretrained(resolve(parsed, root))
    family = family_of(config)
    with torch.device("meta"):
        model = (AutoModelForCausalLM if family == FAMILY_DECODER else AutoModel).from_config(config)
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    lora = lora_param_count(model, lora_r)  # the modules `odyssey finetune` adapts (odyssey.training.lora)
    shape = Shape.from_config(config, total)
    text = getattr(config, "text_config", None) or config
    tied = bool(getattr(text, "tie_word_embeddings", getattr(config, "tie_word_embeddings", True)))
    return ModelShape(
        ref,
        total,
        shape.n_layers,
        shape.hidden,
        shape.n_heads,
        shape.n_kv_heads,
        shape.vocab,
        context_length(config),
        tied,
        family,
        lora,
        lora_input_features(model) if lora_dropout > 0 else 0,
    )


@dataclass
class Plan:
    model: str
    method: str
    precision: str
    hardware: dict
    batch: int
    seq: int
    n_params: int
    trainable_params: int
    memory_gb: dict  # component -> GB
    total_gb: float
    available_gb: float
    fits: bool
    tokens_per_s: float
    hours: float  # for ``tokens`` tokens (trained, or generated)
    tokens: int
    compute_optimal_tokens: int
    flops_per_token: float
    methods: dict = field(default_factory=dict)  # method -> {"fits", "total_gb", "tokens_per_s"}
    cheapest_fit: str | None = None
    notes: list[str] = field(default_factory=list)
    probe: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def memory_components(
    shape: ModelShape,
    method: str,
    precision: str,
    batch: int,
    seq: int,
    runtime_gb: float,
    attention: str = "sdpa",
    cpu_heap: bool = False,
) -> dict[str, float]:
    """GB of each part a job holds at its peak: :func:`odyssey.models.memory.job_components` with this
    model's trainable parameters and the runtime. ``cpu_heap``: training in a CPU process."""
    trainable = shape.n_params if method == "full" else shape.lora_params
    return job_components(
        shape.memory_shape(),
        method,
        precision,
        batch=batch,
        seq=seq,
        trainable=trainable,
        runtime_gb=runtime_gb,
        attention=attention,
        cpu_heap=cpu_heap,
        dropout_inputs=shape.lora_dropout_inputs,
    )


def throughput(
    shape: ModelShape, method: str, batch: int, seq: int, precision: str, measured: dict, hw: Hardware
) -> tuple[float, float]:
    """(tokens per second, FLOPs per token) from the probe's measurements."""
    flops = flops_at(measured, shape.hidden)
    scale = 1.0
    if hw.device == "cpu" and measured.get("device") == "cpu" and hw.cores and measured.get("threads"):
        scale = min(hw.cores, os.cpu_count() or hw.cores) / measured["threads"]  # planning for fewer/more cores
    if hw.tflops and measured.get("device") != hw.device:
        flops, scale = hw.tflops * 1e12 * 0.4, 1.0  # declared peak at a typical 40 % utilization
        measured = {k: v for k, v in measured.items() if k != "efficiency"}  # this machine's, not that one's
    flops *= scale
    n = shape.compute_params
    attention = 2 * shape.n_layers * seq * shape.hidden  # forward attention scores per token (Kaplan)
    if method == "inference":
        per_token = 2 * n + attention
        weight_bytes = shape.n_params * BYTES[precision]
        compute_s = per_token * batch / flops
        memory_s = weight_bytes / (measured["matvec_bytes_per_s"] * scale)
        step = measured["decode_fixed_s"] + shape.n_layers * measured["decode_per_layer_s"] + max(compute_s, memory_s)
        return batch / step * _efficiency(measured, method, batch), per_token
    per_token = (6 if method == "full" else 4) * n + 3 * attention
    tokens = batch * seq
    step = measured["train_fixed_s"] + shape.n_layers * measured["train_per_layer_s"] + per_token * tokens / flops
    return tokens / step * _efficiency(measured, method, batch), per_token


def _efficiency(measured: dict, method: str, batch: int) -> float:
    """The probe's calibration factor for this mode (1.0 for a probe without one); decoding interpolates
    between the batch-1 and batch-8 factors in log(batch) and keeps the nearer one outside them."""
    eff = measured.get("efficiency") or {}
    if method != "inference":
        return eff.get(method, 1.0)  # "full" or "lora", the training methods the probe times
    one, eight = eff.get("decode_1", 1.0), eff.get("decode_8", 1.0)
    t = min(max(math.log(batch) / math.log(8), 0.0), 1.0)
    return math.exp(math.log(one) + t * (math.log(eight) - math.log(one)))


def train_split_tokens(ref: str, family: str, root: Path | None) -> int | None:
    """Tokens a fine-tune of ``ref`` trains on: the project's train split, each example rendered zero-shot
    and tokenized as ``odyssey finetune`` does (:func:`odyssey.training.sft.encode_example`), times
    ``adapt.epochs``. A big split is counted on an even sample of 2,000 examples and scaled.
    None without a project (or its data, or the model's tokenizer)."""
    from transformers import AutoTokenizer

    from odyssey.models import FAMILY_SEQ2SEQ, parse_ref, resolve
    from odyssey.project import SPEC_FILE, Project
    from odyssey.training.sft import encode_example

    if root is None or not (Path(root) / SPEC_FILE).exists():
        return None
    try:
        project = Project.load(root)
        examples = project.dataset().splits.get("train", [])
        parsed = parse_ref(ref, root)
        tokenizer = AutoTokenizer.from_pretrained(parsed.value if parsed.kind == "hub" else resolve(parsed, root))
    except (OdysseyError, OSError, ValueError):  # a broken project, an offline hub tokenizer: the caller notes it
        return None
    spec = project.spec
    cfg = project.default_prompt()  # its generation settings do not change the prompt's tokens
    seq2seq = family == FAMILY_SEQ2SEQ
    sample = examples[:: max(1, len(examples) // 2000)]
    counted = 0
    for example in sample:
        encoded = encode_example(tokenizer, cfg, example, max_len=spec.adapt.max_seq_len, seq2seq=seq2seq)
        counted += len(encoded.input_ids)  # what the training loop counts as its tokens
    return round(counted * len(examples) / max(len(sample), 1) * spec.adapt.epochs) or None


def plan(
    ref: str,
    method: str = "lora",
    hardware: str | Hardware | None = "auto",
    *,
    batch: int = 8,
    seq: int = 512,
    tokens: int | None = None,
    precision: str | None = None,
    lora_r: int = 8,
    lora_dropout: float = 0.0,
    root: Path | None = None,
    measured: dict | None = None,
) -> Plan:
    """Will ``ref`` fit for ``method`` on ``hardware``; memory by component; tokens/s; hours for ``tokens``.
    ``lora_r`` and ``lora_dropout``: the adapter ``odyssey finetune`` would train (adapt.lora.r, .dropout)."""
    if method not in METHODS:
        raise OdysseyError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if batch < 1 or seq < 1:
        raise OdysseyError(f"batch ({batch}) and seq ({seq}) must be at least 1", hint="e.g. --batch 8 --seq 512")
    hw = hardware if isinstance(hardware, Hardware) else Hardware.parse(hardware)
    precision = precision or ("fp32" if hw.device == "cpu" else "bf16")
    shape = model_shape(ref, root, lora_r, lora_dropout)
    if measured is None:
        measured = _probe_for(hw)
    notes = []
    if seq > shape.context:
        notes.append(f"seq {seq} is longer than the model's context ({shape.context})")
    if hw.device == "cuda" and measured.get("device") != "cuda" and not hw.tflops:
        notes.append("no GPU here to probe and no tflops: given; tokens/s are this CPU's, not the GPU's")
    available = hw.memory_gb * USABLE_FRACTION
    if hw.device != "cpu":
        runtime = 0.5  # the CUDA context and allocator reserve, roughly
    else:
        runtime = measured["runtime_gb"] if "runtime_gb" in measured else runtime_gb()
    options = _method_options(shape, precision, batch, seq, runtime, measured, hw, available)
    if method not in options:
        # raises the clear error
        memory_components(shape, method, precision, batch, seq, runtime, cpu_heap=hw.device == "cpu")
    chosen = options[method]
    tps, per_token = throughput(shape, method, batch, seq, precision, measured, hw)
    cheapest = _cheapest_fit(options, method)
    if not chosen["fits"]:
        notes.append(
            f"{method} needs {chosen['total_gb']:.2f} GB but {available:.2f} GB is usable "
            f"({USABLE_FRACTION:.0%} of {hw.memory_gb:g} GB)"
            + (f"; {cheapest} fits" if cheapest else "; nothing fits: use a smaller model or more memory")
        )
    tokens = _planned_tokens(tokens, method, ref, shape.family, root, notes)
    return Plan(
        model=ref,
        method=method,
        precision=precision,
        hardware=hw.as_dict(),
        batch=batch,
        seq=seq,
        n_params=shape.n_params,
        trainable_params=0 if method == "inference" else (shape.n_params if method == "full" else shape.lora_params),
        memory_gb=chosen["memory_gb"],
        total_gb=chosen["total_gb"],
        available_gb=round(available, 3),
        fits=bool(chosen["fits"]),
        tokens_per_s=tps,
        hours=tokens / tps / 3600 if tps > 0 else math.inf,
        tokens=tokens,
        compute_optimal_tokens=TOKENS_PER_PARAM * shape.n_params,
        flops_per_token=per_token,
        methods=options,
        cheapest_fit=cheapest,
        notes=notes,
        probe={k: v for k, v in measured.items() if k != "matmul_flops"},
    )


def _probe_for(hw: Hardware) -> dict:
    """This machine's probe on the device closest to the planned one (the GPU when planning for one here)."""
    import torch

    local_device = "cuda" if hw.device == "cuda" and torch.cuda.is_available() else "cpu"
    return probe(local_device)


def _method_options(
    shape: ModelShape,
    precision: str,
    batch: int,
    seq: int,
    runtime: float,
    measured: dict,
    hw: Hardware,
    available: float,
) -> dict[str, dict]:
    """Every method's fit, total memory, tokens/s and memory by component (full training skips int8/int4)."""
    options = {}
    for m in METHODS:
        if m == "full" and precision in {"int8", "int4"}:
            continue
        parts = memory_components(shape, m, precision, batch, seq, runtime, cpu_heap=hw.device == "cpu")
        total = sum(parts.values())
        tps, _ = throughput(shape, m, batch, seq, precision, measured, hw)
        options[m] = {
            "fits": total <= available,
            "total_gb": round(total, 4),
            "tokens_per_s": round(tps, 2),
            "memory_gb": {k: round(v, 4) for k, v in parts.items()},
        }
    return options


def _cheapest_fit(options: dict[str, dict], method: str) -> str | None:
    """The lightest method that fits: for a training plan, the lightest training method when one fits."""
    fitting = [m for m in ("inference", "lora", "full") if options.get(m, {}).get("fits")]
    training_fits = [m for m in ("lora", "full") if m in fitting]
    return training_fits[0] if method != "inference" and training_fits else (fitting[0] if fitting else None)


def _planned_tokens(tokens: int | None, method: str, ref: str, family: str, root: Path | None, notes: list) -> int:
    """``tokens``, else the project's training split (a fine-tune) or DEFAULT_TOKENS, noted in ``notes``."""
    if tokens is None:
        tokens = DEFAULT_TOKENS
        if method != "inference":
            counted = train_split_tokens(ref, family, root)
            if counted is None:
                notes.append(f"no project training split to count: planned for {DEFAULT_TOKENS:,} tokens (--tokens)")
            else:
                tokens = counted
    return int(tokens)
