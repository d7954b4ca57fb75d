"""Post-training quantization of a candidate: int8 for transformers (PyTorch's x86 engine on CPUs,
torchao elsewhere), torchao int4, GGUF through llama.cpp's own converter and quantizer, bitsandbytes
8/4-bit on a GPU.

- **int8** picks the fastest int8 kernels the machine has: ``int8-x86`` on an x86 CPU, else
  ``int8-torchao``. ``int8-x86`` (``odyssey.models.x86_int8``) runs PyTorch's FBGEMM/oneDNN int8
  kernels, the only int8 linear measured faster than fp32 on this project's CPU (its docstring has
  the figures); it is stored as int8 safetensors and rebuilt by ``odyssey.models.load``. Its
  activation outliers are smoothed with statistics from ``optimize.quantize.calibration_examples``
  train examples (``smoothing_alpha``, SmoothQuant), folded into the model's norms where it can.

- **torchao** (``int8-torchao``, ``int8-weight-only``, ``int4``): ``from_pretrained(...,
  quantization_config=TorchAoConfig(...))`` runs torchao's ``quantize_`` on every linear layer
  while loading, and ``save_pretrained`` writes the quantized tensors as safetensors with the
  ``quantization_config`` in config.json. The result is an ordinary folder: ``odyssey eval``,
  ``odyssey serve`` and ``odyssey.models.load`` load it unchanged (torchao must be installed).
  ``torch.ao.quantization.quantize_dynamic`` is deprecated, optimum-quanto is in maintenance: torchao
  is the maintained path. The methods need no calibration data (weights use their own min/max,
  dynamic activations are scaled per token at run time).
  int4 on a CPU: torchao 0.18's packed int4 formats (``Int4WeightOnlyConfig``) run on CUDA/XPU only,
  so on a CPU ``int4`` uses ``IntxWeightOnlyConfig(int4, group 32)``, which stores the 4-bit values
  unpacked in int8: int4 accuracy, int8 size, no speed-up. For a truly 4-bit CPU model use
  ``gguf:q4_k_m``.
- **GGUF**: the candidate (LoRA merged first) is converted with ``convert_hf_to_gguf.py`` to f16,
  then ``llama-quantize`` writes the requested type. The f16 file is kept next to it (the size
  reference). ``odyssey serve`` runs GGUF candidates on llama-server; stock llama.cpp loads them.
- **bitsandbytes** (``bnb-int8``, ``bnb-nf4``): GPU only; without one the request fails at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.optimize.methods import QuantMethod, check_hardware, parse_quant_method, resolve_auto


@dataclass
class QuantizeResult:
    candidate: str
    parent: str
    method: str
    model_ref: str
    run_id: int
    size_mb: float
    parent_size_mb: float
    measurement: dict | None = None
    comparison: dict | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def torchao_config(method: QuantMethod, group_size: int = 32):
    """The torchao config for a method name (see the module docstring for the int4 choice)."""
    from odyssey.errors import require

    require("torchao", "optimize", "int8/int4 quantization")
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    if method.name == "int8-torchao":
        return Int8DynamicActivationInt8WeightConfig()
    if method.name == "int8-weight-only":
        return Int8WeightOnlyConfig()
    if method.name == "int4":
        if torch.cuda.is_available():
            from torchao.quantization import Int4WeightOnlyConfig

            return Int4WeightOnlyConfig(group_size=max(group_size, 32))
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    raise OdysseyError(f"{method.name} is not a torchao method")


def quantize_torchao(src: Path, out: Path, method: QuantMethod, group_size: int = 32) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    from odyssey.optimize.common import save_model

    config = json.loads((Path(src) / "config.json").read_text())
    if group_size and method.name == "int4":
        width = config.get("hidden_size") or config.get("n_embd") or 0
        if width % group_size:
            raise OdysseyError(
                f"int4 groups of {group_size} do not divide the model's width {width}",
                hint="set optimize.quantize.int4_group_size to a divisor of it (32, 64, 128)",
            )
    quant = TorchAoConfig(torchao_config(method, group_size))
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, quantization_config=quant)
    tokenizer = AutoTokenizer.from_pretrained(src)
    return save_model(model, tokenizer, out, {"method": method.name, "backend": "torchao", "source": str(src)})


def quantize_x86(project, src: Path, out: Path, method: QuantMethod, prompt_cfg) -> Path:
    """int8 for PyTorch's x86 engine (``odyssey.models.x86_int8``): fp32 in, int8 safetensors out,
    smoothed with activation statistics from the scope's train split (SmoothQuant)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from odyssey import ui
    from odyssey.models import x86_int8
    from odyssey.optimize.calibration import calibration_batches

    spec = project.spec.optimize.quantize
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    stats, folded = None, []
    # No train split: int8 without smoothing (recorded below) rather than no int8 at all.
    smoothing = spec.smoothing_alpha is not None and bool(project.examples("train"))
    if smoothing:
        batches = calibration_batches(project, tokenizer, prompt_cfg, spec.calibration_examples, 512)
        with ui.status(f"int8: activation statistics on {spec.calibration_examples} train examples (SmoothQuant)"):
            stats = x86_int8.activation_absmax(model, batches)
            model, folded = x86_int8.smooth_and_check(model, stats, spec.smoothing_alpha, batches[0])
        stats = {k: v for k, v in stats.items() if k not in folded} or None  # the rest divide at run time
    info = {
        "method": method.name,
        "backend": "x86",
        "source": str(src),
        "smoothing_alpha": spec.smoothing_alpha if smoothing else None,
        "smoothing_folded_layers": len(folded),
        "smoothing_runtime_layers": len(stats or {}),
        "calibration_examples": spec.calibration_examples if smoothing else 0,
    }
    return x86_int8.save(
        model, tokenizer, out, info, act_absmax=stats, alpha=spec.smoothing_alpha or 0.5, folded=folded
    )


def quantize_bnb(src: Path, out: Path, method: QuantMethod) -> Path:
    """bitsandbytes 8-bit / NF4 (GPU only; ``check_hardware`` has already refused CPUs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from odyssey.optimize.common import save_model

    if method.name == "bnb-int8":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=quant, device_map="auto")
    return save_model(
        model, AutoTokenizer.from_pretrained(src), out, {"method": method.name, "backend": "bitsandbytes"}
    )


def export_gguf(
    src: Path, out_dir: Path, method: QuantMethod, name: str, fallback: str | None = None
) -> tuple[Path, Path]:
    """HF folder -> f16 GGUF (llama.cpp's converter) -> ``method.detail`` (llama-quantize). Returns both."""
    from odyssey.models import llamacpp

    out_dir.mkdir(parents=True, exist_ok=True)
    f16 = out_dir / f"{name}.f16.gguf"
    if not f16.exists():
        pre = llamacpp.pre_tokenizer_name(src / "tokenizer.json")  # one llama.cpp's hash list may not know
        llamacpp.convert_hf_to_gguf(src, f16, "f16", pre_tokenizer=pre)
    if method.detail == "f16":
        return f16, f16
    target = out_dir / f"{name}.{method.detail}.gguf"
    llamacpp.quantize_gguf(f16, target, method.detail, fallback=fallback)
    return target, f16


def _check_backend_available(method: QuantMethod) -> None:
    """Refuse a backend whose tools are missing before anything is loaded."""
    from odyssey.errors import require
    from odyssey.models import llamacpp

    if method.backend == "gguf":
        llamacpp.convert_script()  # the converter ships in the sources; quantizing needs no build (binding)
    elif method.backend == "torchao":
        require("torchao", "optimize", f"--to {method.name}")


def _gguf_fallback(method: QuantMethod, requested: str | None) -> str | None:
    """The type llama-quantize falls back to for a GGUF method's k-quant tensors; None for other backends."""
    from odyssey.models.llamacpp import gguf_fallback as resolve_fallback

    if method.backend != "gguf":
        return None
    return resolve_fallback(method.detail, requested)


def _quantize_to(
    project, src: Path, run_dir: Path, method: QuantMethod, parent, cand: str, fallback: str | None
) -> tuple[Path, Path, dict]:
    """Write the quantized candidate under ``run_dir``; returns (its model ref, its tokenizer's folder,
    extra facts for the record)."""
    spec = project.spec.optimize.quantize
    if method.backend == "x86":
        out = quantize_x86(project, src, run_dir / method.slug, method, parent.prompt)
        return out, out, {}
    if method.backend == "torchao":
        out = quantize_torchao(src, run_dir / method.slug, method, spec.int4_group_size)
        return out, out, {}
    if method.backend == "bitsandbytes":
        out = quantize_bnb(src, run_dir / method.slug, method)
        return out, out, {}
    out, f16 = export_gguf(src, run_dir, method, cand.replace(":", "-").replace("/", "-"), fallback=fallback)
    extra = {
        "f16_gguf": str(f16),
        "f16_size_mb": f16.stat().st_size / 1e6,
        "size_ratio_vs_f16": out.stat().st_size / f16.stat().st_size,
    }
    return out, src, extra


def quantize(
    project,
    to: str,
    *,
    start_from: str | None = None,
    measure: bool = True,
    name: str | None = None,
    measure_settings: dict | None = None,
    gguf_fallback: str | None = None,
) -> QuantizeResult:
    """``odyssey optimize quantize``: one quantized candidate from ``start_from`` (default: the spec's).

    ``gguf_fallback`` overrides ``optimize.quantize.gguf_fallback`` (k-quant GGUF types only)."""
    from odyssey.optimize.common import (
        STAGE,
        candidate_name,
        hf_checkpoint,
        record_candidate,
        resolve_parent,
        weights_size,
    )
    from odyssey.optimize.record import measure_and_record
    from odyssey.paths import check_name

    if name is not None:
        check_name(name, "candidate name")  # before any work: the GGUF files are named after it
    method = resolve_auto(parse_quant_method(to))
    check_hardware(method)  # before anything is loaded
    _check_backend_available(method)
    parent = resolve_parent(project, start_from)
    store = project.store
    spec = project.spec.optimize.quantize
    fallback = _gguf_fallback(method, gguf_fallback or spec.gguf_fallback)  # checked before any conversion
    slug = method.slug + (f"-{fallback.replace('_', '-')}" if fallback else "")
    cand = name or candidate_name(parent, slug)
    config = {"method": method.name, "backend": method.backend, "parent": parent.name}
    if fallback:
        config["gguf_fallback"] = fallback
    with store.run(STAGE, project.spec.as_dict(), {"action": "quantize", **config}) as run:
        run.artifacts_dir.mkdir(parents=True, exist_ok=True)
        src = hf_checkpoint(project, parent.model_ref, run.artifacts_dir)
        ref, tokenizer_path, extra = _quantize_to(project, src, run.artifacts_dir, method, parent, cand, fallback)
        size_mb = weights_size(ref) / 1e6
        parent_size = weights_size(src) / 1e6
        method_info = {**config, "tokenizer_path": str(tokenizer_path), "size_mb": size_mb, **extra}
        cand_id = record_candidate(project, run, cand, str(ref), parent, method_info)
        result = QuantizeResult(cand, parent.name, method.name, str(ref), run.id, size_mb, parent_size, extra=extra)
        if measure:
            result.measurement, result.comparison = measure_and_record(
                project,
                run,
                cand_id,
                cand,
                str(ref),
                parent,
                method_info,
                tokenizer_path=str(tokenizer_path),
                settings=measure_settings,
            )
        run.set_summary(result.as_dict())
    return result
