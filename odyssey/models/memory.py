"""Memory rules of thumb for inference and training, written out with their sources.

- Weights: parameters x bytes per parameter (fp32 4, fp16/bf16 2, int8 1, int4 0.5).
- Full fine-tuning with Adam in fp32: weights 4 + gradients 4 + Adam moments 8 = 16 bytes per
  parameter, plus activations (the course's "about 20 bytes per parameter" once activations
  and temporaries are counted).
- Mixed precision keeps an fp32 master copy: 2 (weights) + 2 (grads) + 4 (master) + 8 (Adam).
- Activations per layer: s*b*h*(34 + 5*a*s/h) bytes at 16-bit precision (Korthikanti et al.,
  2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 1), doubled at fp32.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x tokens x bytes.
- LoRA: only adapter parameters get gradients and Adam states; the frozen base is weights only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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


BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
GB = 1024**3


@dataclass
class Shape:
    n_params: int
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    context: int

    @classmethod
    def from_config(cls, config, n_params: int) -> "Shape":
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
    head_dim = shape.hidden / max(shape.n_heads, 1)
    return 2 * shape.n_layers * shape.n_kv_heads * head_dim * tokens * batch * BYTES_PER_PARAM[precision]


def activation_bytes(shape: Shape, batch: int, seq: int, precision: str = "fp32") -> float:
    per_layer_16bit = seq * batch * shape.hidden * (34 + 5 * shape.n_heads * seq / max(shape.hidden, 1))
    scale = 2.0 if precision == "fp32" else 1.0
    # The logits (batch x seq x vocab, fp32) are often the largest single tensor in small models.
    logits = batch * seq * shape.vocab * 4 * 2  # logits + their gradient
    return shape.n_layers * per_layer_16bit * scale + logits


@dataclass
class MemoryEstimate:
    inference_gb: dict[str, float]
    train_full_gb: float
    train_lora_gb: float
    kv_cache_gb: float
    detail: dict

    def as_dict(self) -> dict:
        return asdict(self)


def estimate(shape: Shape, *, batch: int = 8, seq: int = 512, lora_fraction: float = 0.01,
             train_precision: str = "fp32") -> MemoryEstimate:
    """Inference memory by precision, and training memory for full fine-tuning and LoRA."""
    kv = kv_cache_bytes(shape, seq, batch=1, precision="fp16" if train_precision != "fp32" else "fp32")
    inference = {p: (weights_bytes(shape.n_params, p) + kv) / GB for p in ("fp32", "fp16", "bf16", "int8", "int4")}
    act = activation_bytes(shape, batch, seq, train_precision)
    if train_precision == "fp32":
        full_states = shape.n_params * (4 + 4 + 8)
    else:  # mixed precision: 16-bit weights and grads, fp32 master weights, fp32 Adam moments
        full_states = shape.n_params * (2 + 2 + 4 + 8)
    trainable = shape.n_params * lora_fraction
    lora_states = weights_bytes(shape.n_params, train_precision) + trainable * (4 + 4 + 8)
    return MemoryEstimate(
        inference_gb=inference,
        train_full_gb=(full_states + act) / GB,
        train_lora_gb=(lora_states + act) / GB,
        kv_cache_gb=kv / GB,
        detail={"batch": batch, "seq": seq, "activations_gb": act / GB, "optimizer_gb": shape.n_params * 8 / GB,
                "lora_fraction": lora_fraction, "train_precision": train_precision},
    )
