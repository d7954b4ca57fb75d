"""Optimize: quantization (torchao int8/int4, GGUF via llama.cpp, bitsandbytes on GPUs),
distillation into a smaller student, structured and unstructured pruning with LoRA recovery,
and the size / speed / quality report against the scope's gates.

Every method makes a candidate linked to its parent and measured beside it by one harness
(:mod:`odyssey.optimize.measure`). Entry points load lazily: ``odyssey --help`` imports this
package to find its commands.
"""

from odyssey.lazy import lazy_exports

_EXPORTS = {
    "quantize": "odyssey.optimize.quantization",
    "QuantizeResult": "odyssey.optimize.quantization",
    "distill": "odyssey.optimize.distillation",
    "DistillResult": "odyssey.optimize.distillation",
    "prune": "odyssey.optimize.pruning",
    "PruneResult": "odyssey.optimize.pruning",
    "report": "odyssey.optimize.reporting",
    "OptimizeReport": "odyssey.optimize.reporting",
    "measure_model": "odyssey.optimize.measure",
}


__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
