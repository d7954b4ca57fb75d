"""The optimization methods Odyssey offers, parsed and checked before any work starts.

Only the standard library here: the spec validates ``optimize.quantize.to`` with this module,
and ``odyssey --help`` must stay fast.
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
ALIASES = {"gguf": "gguf:q4_k_m", "int8-dynamic": "int8", "int8wo": "int8-weight-only", "nf4": "bnb-nf4",
           "q4_k_m": "gguf:q4_k_m", "q8_0": "gguf:q8_0"}


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
    raise OdysseyError(f"unknown quantization method {text!r}",
                       hint=(f"did you mean {close[0]!r}? " if close else "") + "known: " + ", ".join(known))


def resolve_auto(method: QuantMethod) -> QuantMethod:
    """``int8`` -> ``int8-x86`` on a CPU whose PyTorch has the x86 engine, else ``int8-torchao``."""
    if method.backend != "auto":
        return method
    import torch

    from odyssey.models import x86_int8

    if not torch.cuda.is_available() and x86_int8.available():
        return parse_quant_method("int8-x86")
    return parse_quant_method("int8-torchao")


def check_hardware(method: QuantMethod) -> None:
    """A method the machine cannot run fails here, before any model is loaded."""
    if method.backend == "x86":
        import torch

        from odyssey.models import x86_int8

        if not x86_int8.available():
            raise OdysseyError(f"{method.name} needs PyTorch's x86 quantized engine, which this PyTorch build lacks "
                               f"(engines: {', '.join(torch.backends.quantized.supported_engines)})",
                               hint="use --to int8-torchao, or gguf:q8_0 (llama.cpp) for a fast 8-bit CPU model")
        return
    if not method.needs_gpu:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise OdysseyError(
            f"{method.name} ({BITSANDBYTES[method.name]}) needs a CUDA GPU, and this machine has none",
            hint="on a CPU use --to int8 (torchao) or --to gguf:q4_k_m (llama.cpp) instead",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        from odyssey.errors import MissingDependency

        raise MissingDependency(f"{method.name} needs the bitsandbytes package", hint="pip install bitsandbytes")


def check_sparsity(value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OdysseyError(f"sparsity {value!r} is not a number", hint="use a fraction between 0 and 1, e.g. 0.25") from None
    if not 0 < value < 1:
        raise OdysseyError(f"sparsity {value:g} is outside (0, 1): it is the fraction of weights or units removed",
                           hint="use a fraction between 0 and 1, e.g. --sparsity 0.25 removes a quarter")
    return value
