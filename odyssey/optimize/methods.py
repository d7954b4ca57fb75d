"""The optimization methods Odyssey offers, parsed and checked before any work starts.

The names (and their parser) live in :mod:`odyssey.quant_methods`, below the spec that
validates ``optimize.quantize.to`` with them; this module adds what depends on the machine.
Only the standard library at import: ``odyssey --help`` must stay fast.
"""

from __future__ import annotations

from odyssey.errors import OdysseyError
from odyssey.quant_methods import BITSANDBYTES, QuantMethod, parse_quant_method

__all__ = ["QuantMethod", "check_hardware", "check_sparsity", "parse_quant_method", "resolve_auto"]


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
            raise OdysseyError(
                f"{method.name} needs PyTorch's x86 quantized engine, which this PyTorch build lacks "
                f"(engines: {', '.join(torch.backends.quantized.supported_engines)})",
                hint="use --to int8-torchao, or gguf:q8_0 (llama.cpp) for a fast 8-bit CPU model",
            )
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
        raise OdysseyError(
            f"sparsity {value!r} is not a number", hint="use a fraction between 0 and 1, e.g. 0.25"
        ) from None
    if not 0 < value < 1:
        raise OdysseyError(
            f"sparsity {value:g} is outside (0, 1): it is the fraction of weights or units removed",
            hint="use a fraction between 0 and 1, e.g. --sparsity 0.25 removes a quarter",
        )
    return value
