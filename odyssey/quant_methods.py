"""The quantization methods Odyssey knows, by name: the one list the spec validates
``optimize.quantize.to`` against and the optimize stage runs.

A foundation module (the spec imports it), so only the standard library and ``odyssey.errors``
here: no stage's code, and ``odyssey --help`` stays fast. What the machine can run
(``check_hardware``) and which int8 kernel ``int8`` means here (``resolve_auto``) are the optimize
stage's business, in :mod:`odyssey.optimize.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass

from odyssey.errors import OdysseyError

# name -> description, one dict per backend
AUTO = {
    "int8": "int8 weights + dynamic int8 activations with the fastest kernels this machine has: "
    "int8-x86 on x86 CPUs, int8-torchao elsewhere",
}
X86 = {
    "int8-x86": "PyTorch's x86 engine (FBGEMM/oneDNN, VNNI/AMX kernels): int8 per-channel weights, dynamic int8 "
    "activations; CPU",
}
TORCHAO = {
    "int8-torchao": "torchao: int8 weights and dynamically quantized int8 activations "
    "(Int8DynamicActivationInt8WeightConfig)",
    "int8-weight-only": "torchao: int8 weights, fp32 activations (Int8WeightOnlyConfig)",
    "int4": "torchao: int4 weight-only, grouped scales (Int4WeightOnlyConfig; CPU kernel via the 'opaque' packing)",
}
BITSANDBYTES = {
    "bnb-int8": "bitsandbytes LLM.int8() (load_in_8bit), GPU",
    "bnb-nf4": "bitsandbytes 4-bit NF4 with double quantization (the QLoRA base format), GPU",
}
GGUF_TYPES = {
    "f16": "llama.cpp: 16-bit floats (the reference size)",
    "q8_0": "llama.cpp: 8-bit, one scale per 32 weights",
    "q6_k": "llama.cpp: 6-bit k-quant",
    "q5_k_m": "llama.cpp: 5-bit k-quant, mixed",
    "q4_k_m": "llama.cpp: 4-bit k-quant, mixed (attention/ffn_down kept at 6 bits in half the layers)",
    "q4_0": "llama.cpp: 4-bit, one scale per 32 weights",
    "q3_k_m": "llama.cpp: 3-bit k-quant, mixed",
    "q2_k": "llama.cpp: 2-bit k-quant",
}
ALIASES = {
    "gguf": "gguf:q4_k_m",
    "int8-dynamic": "int8",
    "int8wo": "int8-weight-only",
    "nf4": "bnb-nf4",
    "q4_k_m": "gguf:q4_k_m",
    "q8_0": "gguf:q8_0",
}


@dataclass(frozen=True)
class QuantMethod:
    name: str  # canonical, e.g. "int8", "gguf:q4_k_m"
    backend: str  # auto | x86 | torchao | gguf | bitsandbytes
    detail: str  # the GGUF type, or the torchao/bnb method name

    @property
    def needs_gpu(self) -> bool:
        return self.backend == "bitsandbytes"

    @property
    def slug(self) -> str:
        return self.name.replace("gguf:", "gguf-").replace("_", "-")


def all_methods() -> dict[str, str]:
    return {**AUTO, **X86, **TORCHAO, **{f"gguf:{k}": v for k, v in GGUF_TYPES.items()}, **BITSANDBYTES}


def parse_quant_method(text: str) -> QuantMethod:
    """``int8`` / ``int4`` / ``gguf:q4_k_m`` / ``bnb-nf4`` ... -> a :class:`QuantMethod`, or a clear error."""
    name = ALIASES.get(str(text).strip().lower(), str(text).strip().lower())
    if name in AUTO:
        return QuantMethod(name, "auto", name)
    if name in X86:
        return QuantMethod(name, "x86", name)
    if name in TORCHAO:
        return QuantMethod(name, "torchao", name)
    if name in BITSANDBYTES:
        return QuantMethod(name, "bitsandbytes", name)
    if name.startswith("gguf:") and name[5:] in GGUF_TYPES:
        return QuantMethod(name, "gguf", name[5:])
    import difflib

    known = list(all_methods())
    close = difflib.get_close_matches(name, known, n=1)
    raise OdysseyError(
        f"unknown quantization method {text!r}",
        hint=(f"did you mean {close[0]!r}? " if close else "") + "known: " + ", ".join(known),
    )
