"""Memory for inference and training, written out with their sources: the one estimate that
``odyssey models``, ``odyssey plan`` (:mod:`odyssey.select.planner`) and ``odyssey finetune`` report.

Bytes per part of a job at its peak (:func:`job_components`):

- weights: parameters x bytes per parameter (fp32 4, fp16/bf16 2, int8 1, int4 0.5);
- gradients: trainable parameters x 4 bytes (2 under 16-bit mixed precision);
- optimizer: AdamW keeps two fp32 moments, 8 bytes per *trainable* parameter, +4 for the fp32 master
  copy under mixed precision (Rajbhandari et al. 2020, "ZeRO", section 3.1: 2+2+12 = 16 bytes per
  parameter). Full fine-tuning in fp32 is 4 + 4 + 8 = 16 bytes per parameter (the course's "about 20"
  once activations and temporaries count);
- adapter (LoRA, prompt tuning): the trainable parameters' own weights (fp32; 16-bit under mixed
  precision); the frozen base is weights only, which is what PEFT saves (Hu et al. 2021, "LoRA");
- activations: per layer s*b*h*(34 + 5*a*s/h) bytes at 16 bit (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", eq. 1), x2 at fp32, without the 5*a*s/h
  attention-matrix term under fused attention (PyTorch's scaled_dot_product_attention, transformers'
  default, recomputes it in the backward), plus the logits and their gradient (b*s*vocab*4*2), often
  the biggest tensor in a small model;
- lora_dropout (LoRA with dropout > 0): each adapted linear keeps its own dropped copy of its input
  for the backward, where without dropout they share the one input: tokens x (sum of the adapted
  linears' input widths) x 1.46 x bytes per activation. Measured with
  ``torch.autograd.graph.saved_tensors_hooks`` on SmolLM2-135M (LoRA on the seven projections): the seven
  dropped inputs (1.0 copy) plus tensors autograd keeps beside them (0.46), 50 bytes per hidden unit per
  token per layer, +62 % over the same LoRA without dropout;
- heap_retained (training in a CPU process): one more copy of the activations (LoRA's dropped inputs
  included), measured
  (benchmarks/plan.py): glibc keeps the forward's freed blocks while the backward allocates;
- KV cache for serving: 2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes
  (Pope et al. 2022, "Efficiently Scaling Transformer Inference", section 2);
- runtime: what the process holds before any model (torch, transformers), measured by the
  planner's probe; 0 where a caller measures from after that point (``odyssey finetune``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from odyssey.errors import OdysseyError


def proc_kb_field_gb(path: str, key: str) -> float | None:
    """A ``key: N kB`` line of a Linux /proc file in GiB (None where there is no such file or line)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed tensor memory in its heap, so after one training run in a process the resident set
    stays near that run's peak. A baseline taken then would be subtracted from the next run's peak
    although the next run reuses those same pages: trimming first makes the baseline what is live."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        pass


def rss_gb() -> float:
    """Resident memory of this process now (Linux /proc; the lifetime peak elsewhere): the measured
    counterpart of the estimates below."""
    now = proc_kb_field_gb("/proc/self/status", "VmRSS")
    if now is not None:
        return now
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def peak_rss_gb() -> float:
    """Peak resident memory of this process's own address space (Linux VmHWM).

    Not ``ru_maxrss``: Linux carries that across ``execve`` from the process that spawned us (with
    vfork, the parent's whole address space), so a fresh measuring child started by a 2 GB parent
    reported a 2 GB peak for a model of a few MB."""
    peak = proc_kb_field_gb("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


LORA_DROPOUT_COPIES = 1.46  # measured: see lora_dropout in the module docstring
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
GB = 1024**3
METHODS = ("inference", "lora", "full")  # lora: any method that trains a few parameters on a frozen base


@dataclass
class Shape:
    n_params: int
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    context: int

    @property
    def head_dim(self) -> float:
        return self.hidden / max(self.n_heads, 1)

    @classmethod
    def from_config(cls, config, n_params: int) -> Shape:
        text = getattr(config, "text_config", None) or config  # multimodal configs nest the LM

        def first(*names, default=0):
            for name in names:
                value = getattr(text, name, None)
                if isinstance(value, int) and value > 0:
                    return value
            return default

        layers = first("num_hidden_layers", "n_layer", "num_layers", "encoder_layers")
        if getattr(text, "is_encoder_decoder", False):
            layers += first("num_decoder_layers", "decoder_layers", default=layers)
        heads = first("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", default=1)
        return cls(
            n_params=n_params,
            n_layers=layers or 1,
            hidden=first("hidden_size", "n_embd", "d_model", default=1),
            n_heads=heads,
            n_kv_heads=first("num_key_value_heads", default=heads),
            vocab=first("vocab_size", default=1),
            context=first("max_position_embeddings", "n_positions", default=512),
        )


def weights_bytes(n_params: int, precision: str) -> float:
    return n_params * BYTES_PER_PARAM[precision]


def kv_cache_bytes(shape: Shape, tokens: int, batch: int = 1, precision: str = "fp16") -> float:
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * tokens * batch * BYTES_PER_PARAM[precision]


def activation_bytes(shape: Shape, batch: int, seq: int, precision: str = "fp32", attention: str = "sdpa") -> float:
    """Training activations (Korthikanti et al. 2022, eq. 1) plus the logits and their gradient."""
    attention_term = 5 * shape.n_heads * seq / max(shape.hidden, 1) if attention == "eager" else 0.0
    per_layer_16bit = seq * batch * shape.hidden * (34 + attention_term)
    scale = 2.0 if precision == "fp32" else 1.0
    logits = batch * seq * shape.vocab * 4 * 2  # fp32 logits + their gradient
    return shape.n_layers * per_layer_16bit * scale + logits


def job_components(
    shape: Shape,
    method: str,
    precision: str = "fp32",
    *,
    batch: int,
    seq: int,
    trainable: int | None = None,
    runtime_gb: float = 0.0,
    attention: str = "sdpa",
    cpu_heap: bool = False,
    dropout_inputs: int = 0,
) -> dict[str, float]:
    """GB of each part a job holds at its peak (the module docstring gives each rule and its source).

    ``method``: inference | full | lora (any method that trains ``trainable`` parameters on a frozen
    base of ``shape.n_params``). ``cpu_heap``: training in a CPU process (adds ``heap_retained``).
    ``dropout_inputs``: LoRA with dropout, the summed input widths of the adapted linears
    (:func:`odyssey.training.lora.lora_input_features`); 0 without dropout."""
    if method not in METHODS:
        raise OdysseyError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if precision not in BYTES_PER_PARAM:
        raise OdysseyError(f"unknown precision {precision!r}", hint=f"use one of {', '.join(BYTES_PER_PARAM)}")
    parts = {"runtime": runtime_gb * GB, "weights": weights_bytes(shape.n_params, precision)}
    if method == "inference":
        parts["kv_cache"] = kv_cache_bytes(shape, seq, batch, "fp32" if precision == "fp32" else "fp16")
        # One position's logits per sequence while decoding, the whole prompt's during prefill.
        parts["activations"] = batch * seq * (shape.hidden * 4 * 4) + batch * seq * shape.vocab * 4
        return {k: v / GB for k, v in parts.items()}
    if precision in {"int8", "int4"} and method == "full":
        raise OdysseyError(
            f"full fine-tuning cannot train {precision} weights",
            hint="use --method lora with a quantized base (QLoRA), or --precision fp32/bf16",
        )
    mixed = precision in {"fp16", "bf16"}
    if method == "full":
        trainable = shape.n_params
    else:
        trainable = trainable or 0
        parts["adapter"] = trainable * (2.0 if mixed else 4.0)
    parts["gradients"] = trainable * (2.0 if mixed else 4.0)
    parts["optimizer"] = trainable * (8 + (4 if mixed else 0))  # Adam moments (+ fp32 master weights)
    parts["activations"] = activation_bytes(shape, batch, seq, precision, attention)  # x2 only at fp32
    if method == "lora" and dropout_inputs:
        parts["lora_dropout"] = batch * seq * dropout_inputs * LORA_DROPOUT_COPIES * (2.0 if mixed else 4.0)
    if cpu_heap:
        # Measured (benchmarks/plan.py, SmolLM2 LoRA b=4 s=256): glibc keeps the forward's freed
        # activation blocks in its heap, fragmented, while the backward allocates gradients of the same
        # size, so peak RSS holds about one more copy of the activations (LoRA 4.2 GB measured vs
        # 2.4 GB of live tensors; with MALLOC_MMAP_THRESHOLD_=131072 the same job peaks at 2.7 GB but
        # trains 45 % slower, so Odyssey does not set it).
        parts["heap_retained"] = parts["activations"] + parts.get("lora_dropout", 0.0)
    return {k: v / GB for k, v in parts.items()}


@dataclass
class MemoryEstimate:
    inference_gb: dict[str, float]
    train_full_gb: float
    train_lora_gb: float
    kv_cache_gb: float
    detail: dict

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(
    shape: Shape,
    *,
    batch: int = 8,
    seq: int = 512,
    lora_fraction: float = 0.01,
    train_precision: str = "fp32",
    trainable: int | None = None,
    cpu_heap: bool = False,
    dropout_inputs: int = 0,
) -> MemoryEstimate:
    """Inference memory by precision (weights and KV cache), and training memory for full fine-tuning
    and LoRA (``trainable`` parameters, else ``lora_fraction`` of them; ``dropout_inputs`` as in
    :func:`job_components`): sums of :func:`job_components`."""
    kv = kv_cache_bytes(shape, seq, batch=1, precision="fp16" if train_precision != "fp32" else "fp32")
    inference = {p: (weights_bytes(shape.n_params, p) + kv) / GB for p in ("fp32", "fp16", "bf16", "int8", "int4")}
    lora_trainable = trainable if trainable is not None else round(shape.n_params * lora_fraction)
    full = job_components(shape, "full", train_precision, batch=batch, seq=seq, cpu_heap=cpu_heap)
    lora = job_components(
        shape,
        "lora",
        train_precision,
        batch=batch,
        seq=seq,
        trainable=lora_trainable,
        cpu_heap=cpu_heap,
        dropout_inputs=dropout_inputs,
    )
    return MemoryEstimate(
        inference_gb=inference,
        train_full_gb=sum(full.values()),
        train_lora_gb=sum(lora.values()),
        kv_cache_gb=kv / GB,
        detail={
            "batch": batch,
            "seq": seq,
            "activations_gb": full["activations"] + full.get("heap_retained", 0.0),
            "optimizer_gb": full["optimizer"],
            "lora_fraction": lora_trainable / max(shape.n_params, 1),
            "train_precision": train_precision,
            "cpu_heap": cpu_heap,
        },
    )
