"""Int8 for x86 CPUs on PyTorch's own quantized engine (``x86``: FBGEMM and oneDNN, AVX512-VNNI /
AMX-int8 kernels). Every linear layer holds int8 weights, one scale per output channel.

Why this and not torchao on a CPU: decoding one token streams every weight from memory once, so a
smaller weight only pays when a kernel multiplies it as fast as it reads it. Measured on this
project's 2-core AVX-512/AMX machine (``benchmarks/int8_kernels.py``, a 30-layer stack of SmolLM2's
projections at one token, weights too big for the caches): this engine's ``quantized::linear_dynamic``
runs 1.7-2.0x faster than fp32 MKL; torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` at 0.45x and
``Int8WeightOnlyConfig`` at 0.45-0.7x, eager or under ``torch.compile``. PyTorch deprecated the
``torch.ao.quantization`` front end (``quantize_dynamic``, pickled quantized modules) in favour of
torchao; Odyssey uses only the engine's operators (``linear_prepack`` / ``linear_dynamic``) and keeps
the weights in safetensors. Where the engine is missing (non-x86 builds), ``available()`` is False and
``--to int8`` uses torchao instead.

How a product runs (:class:`Int8Linear`), and why:

- **Few rows (decoding: one token per sequence, up to ``INT8_ROWS``)**: int8 x int8 on the engine;
  the activations are quantized on each call with one scale for the whole input, which at one token
  is one scale per token. That is where decoding spends its time, and where int8 pays.
- **Many rows (the prompt)**: fp32 product with the weight dequantized for that call. One activation
  scale across hundreds of prompt tokens is too coarse: on SmolLM2 it took ROUGE-L from 0.199 to 0.107
  on DialogSum, and per-token KL to the fp32 model was 0.61 against 0.0045 for int8 weights alone.
  Prompts are compute-bound, so dequantizing costs little there.
- **Smoothing (SmoothQuant, Xiao et al. 2023)**: LLM activations have a few channels far larger than
  the rest, which one int8 scale handles badly. With calibration statistics (max |x| per input
  channel on train examples), each layer's input is divided by ``s = max|x|^a / max|w|^(1-a)`` and
  its weight columns multiplied by ``s``: the product is unchanged, the outliers move into the
  weight, where per-channel scales absorb them. a = 0.5 cut decoding KL from 0.011 to 0.006 on
  SmolLM2. In Llama-style blocks the division is folded into the op before the layer
  (:func:`fold_smoothing`), so decoding pays nothing for it; elsewhere each layer divides at run time.
- Activations use the full 8-bit range when the CPU has VNNI or AMX-int8; older AVX2 kernels sum
  pairs of u8 x s8 products in 16 bits, which can saturate, so there the engine's 7-bit range is used.

The folder (``save``): config.json and the tokenizer as usual; ``model.safetensors`` with fp32 tensors
for everything except linear layers, which are stored as ``<layer>.weight_int8`` (int8, [out, in]),
``<layer>.weight_scale`` (fp32, [out]), ``<layer>.input_scale`` (fp32, [in], when smoothed) and
``<layer>.bias``; ``odyssey-int8.json`` marks the folder and lists the layers. ``odyssey.models.load``
rebuilds the model from it (``load``).
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch  # this module is imported only where a model is built or loaded

from odyssey.models.loading import X86_INT8_MARKER as MARKER  # defined there: the loader checks it without torch

ENGINE = "x86"
WEIGHTS = "model.safetensors"
INT8_ROWS = 16  # inputs with more rows than this (prompt tokens x sequences) take the fp32 path


def available() -> bool:
    return ENGINE in torch.backends.quantized.supported_engines


@functools.lru_cache(maxsize=1)
def _full_range() -> bool:
    """VNNI / AMX-int8 accumulate u8 x s8 in 32 bits: no saturation, so activations may use all 8 bits."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_weight(weight, input_scale=None):
    """Symmetric per-output-channel int8: ``w * s ~= q * scale[:, None]`` with q in [-127, 127]."""
    w = weight.detach().float()
    if input_scale is not None:
        w = w * input_scale[None, :]
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def smoothing_scale(act_absmax, weight, alpha: float = 0.5):
    """SmoothQuant's per-input-channel scale ``max|x|^a / max|w|^(1-a)`` (see the module docstring)."""
    return _shared_scale(act_absmax, [weight], alpha)


def _shared_scale(act, weights, alpha: float):
    """One smoothing scale for layers reading the same input (q/k/v; gate/up): the weights' max per column."""
    w = torch.stack([w.detach().float().abs().amax(dim=0) for w in weights]).amax(dim=0).clamp(min=1e-5)
    return (act.float().clamp(min=1e-5).pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights on PyTorch's x86 engine (see the module docstring).

    The int8 weight is held twice: packed for the engine's kernel (decoding), and plain, because
    dequantizing for a prompt from the plain copy takes a fraction of a millisecond while unpacking
    the engine's layout took longer than the fp32 product itself (10x at 64 rows)."""

    def __init__(self, q, scale, bias=None, input_scale=None):
        super().__init__()
        self.out_features, self.in_features = q.shape
        torch.backends.quantized.engine = ENGINE
        with warnings.catch_warnings():  # the deprecation notice of quantized tensors (see the module docstring)
            warnings.simplefilter("ignore")
            weight = torch._make_per_channel_quantized_tensor(
                q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0
            )
            self._packed = torch.ops.quantized.linear_prepack(weight, None)
        self.register_buffer("weight_int8", q.contiguous())
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().float().clone())
        self.reduce_range = not _full_range()

    @classmethod
    def from_linear(cls, linear, input_scale=None) -> Int8Linear:
        q, scale = quantize_weight(linear.weight, input_scale)
        return cls(q, scale, linear.bias, input_scale)

    def int8_weight(self):
        """(q, scale) as stored: int8 [out, in] and fp32 [out]."""
        return self.weight_int8, self.weight_scale

    def forward(self, x):
        if self.input_scale is not None:
            x = x / self.input_scale
        if x.numel() <= INT8_ROWS * self.in_features:
            y = torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)
            return y if self.bias is None else y + self.bias
        weight = self.weight_int8.to(x.dtype) * self.weight_scale[:, None].to(x.dtype)
        return torch.nn.functional.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 x86, "
            f"smoothed={self.input_scale is not None}"
        )


def _linear_names(model) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def _set_module(model, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def activation_absmax(model, batches) -> dict:
    """Max |x| per input channel of every linear layer over ``batches`` (dicts of input_ids /
    attention_mask): the calibration statistics smoothing needs. Padding positions are left out."""
    stats: dict = {}
    mask_holder: dict = {}

    def hook(name):
        def fn(module, args):
            x = args[0].detach()
            mask = mask_holder.get("mask")
            rows = x.reshape(-1, x.shape[-1])
            if mask is not None and mask.numel() == rows.shape[0]:
                rows = rows[mask.reshape(-1).bool()]
            a = rows.abs().amax(dim=0).float()
            stats[name] = torch.maximum(stats[name], a) if name in stats else a

        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in _linear_names(model)]
    try:
        with torch.inference_mode():
            for batch in batches:
                mask_holder["mask"] = batch.get("attention_mask")
                model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    finally:
        for h in handles:
            h.remove()
    return stats


@torch.no_grad()
def fold_smoothing(model, act_absmax: dict, alpha: float = 0.5) -> list[str]:
    """SmoothQuant folded into the model's own weights (Llama-style decoders), in place: each scale
    divides the op that produces the layer's input (the RMSNorm before q/k/v, gate/up and the output
    layer; up_proj's rows before down_proj; v_proj's rows before o_proj, one scale per KV head's
    channel) and multiplies the layer's weight columns. The function is unchanged, and decoding pays
    no division per layer (dividing at run time cost about 20 % of int8 decoding speed on SmolLM2).
    Returns the smoothed layers' names; an architecture it does not recognise is left unchanged ([])."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    head = model.get_output_embeddings()
    if layers is None or head is None or not hasattr(inner, "norm"):
        return []
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    done = []
    for i, layer in enumerate(layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        parts = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        mparts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
        norms = [getattr(layer, n, None) for n in ("input_layernorm", "post_attention_layernorm")]
        if any(p is None for p in parts + mparts + norms):
            return done
        prefix = f"model.layers.{i}"
        q, k, v, o = parts
        gate, up, down = mparts
        s = _shared_scale(act_absmax[f"{prefix}.self_attn.q_proj"], [q.weight, k.weight, v.weight], alpha)
        norms[0].weight.div_(s)
        for lin in (q, k, v):
            lin.weight.mul_(s[None, :])
        s = _shared_scale(act_absmax[f"{prefix}.mlp.gate_proj"], [gate.weight, up.weight], alpha)
        norms[1].weight.div_(s)
        for lin in (gate, up):
            lin.weight.mul_(s[None, :])
        s = smoothing_scale(act_absmax[f"{prefix}.mlp.down_proj"], down.weight, alpha)
        up.weight.div_(s[:, None])
        if up.bias is not None:
            up.bias.div_(s)
        down.weight.mul_(s[None, :])
        # o_proj's input channel (head h, dim d) is v_proj's output (KV head of h, d): one scale per KV channel
        head_dim = o.in_features // n_heads
        s = smoothing_scale(act_absmax[f"{prefix}.self_attn.o_proj"], o.weight, alpha).view(
            n_kv, n_heads // n_kv, head_dim
        )
        s_kv = s.amax(dim=1)  # [n_kv, head_dim]
        v.weight.div_(s_kv.reshape(-1)[:, None])
        if v.bias is not None:
            v.bias.div_(s_kv.reshape(-1))
        o.weight.mul_(s_kv[:, None, :].expand(n_kv, n_heads // n_kv, head_dim).reshape(-1)[None, :])
        done += [f"{prefix}.self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        done += [f"{prefix}.mlp.{n}" for n in ("gate_proj", "up_proj", "down_proj")]
    head_name = next(n for n, m in model.named_modules() if m is head)
    s = smoothing_scale(act_absmax[head_name], head.weight, alpha)
    if head.weight is model.get_input_embeddings().weight:  # tied: the embedding lookup must keep its weights
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
    inner.norm.weight.div_(s)
    head.weight.mul_(s[None, :])
    return done + [head_name]


def smooth_and_check(model, act_absmax: dict, alpha: float, batch: dict) -> tuple[object, list[str]]:
    """Fold smoothing into a copy of ``model`` and keep it only if the copy computes the same logits
    (relative difference under 1e-3) on ``batch``: a norm that is not a plain ``x * w`` (Gemma's
    ``x * (1 + w)``) would break the folding silently otherwise. Returns (model, smoothed layers)."""
    import copy

    folded = copy.deepcopy(model)
    done = fold_smoothing(folded, act_absmax, alpha)
    if not done:
        return model, []
    with torch.inference_mode():
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
        a, b = model(**kw).logits.float(), folded(**kw).logits.float()
    if float((a - b).norm() / a.norm()) > 1e-3:
        return model, []
    return folded, done


def _runtime_scale(name: str, linear, act_absmax: dict | None, alpha: float):
    """The layer's run-time smoothing scale, or None when ``act_absmax`` has no statistics for it."""
    return smoothing_scale(act_absmax[name], linear.weight, alpha) if act_absmax and name in act_absmax else None


def quantize_model(model, act_absmax: dict | None = None, alpha: float = 0.5) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by :class:`Int8Linear`, smoothed at run
    time where ``act_absmax`` has the layer's statistics; returns the layers' names.

    (q/k/v and gate/up as one int8 product each, quantizing their shared input once, was tried and
    decoded SmolLM2 slower: 25.9 against 31.5 tokens/s.)"""
    names = _linear_names(model)
    for name in names:
        linear = model.get_submodule(name)
        _set_module(model, name, Int8Linear.from_linear(linear, _runtime_scale(name, linear, act_absmax, alpha)))
    return names


def save(
    model,
    tokenizer,
    out: Path,
    extra: dict | None = None,
    act_absmax: dict | None = None,
    alpha: float = 0.5,
    folded: list[str] | tuple = (),
) -> Path:
    """Write an fp32 transformers model as an int8 folder (see the module docstring), atomically;
    smoothed at run time with ``act_absmax`` (from :func:`activation_absmax`) when given; ``folded``
    names the layers whose smoothing :func:`fold_smoothing` already put into the weights."""
    import shutil

    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = _linear_names(model)
    linear_keys = {f"{n}.{p}" for n in names for p in ("weight", "bias")}
    tensors: dict = {}
    seen: dict[int, str] = {}
    for key, value in model.state_dict().items():
        if key in linear_keys:
            continue
        if value.data_ptr() in seen:  # tied copies (safetensors refuses shared storage)
            continue
        seen[value.data_ptr()] = key
        tensors[key] = value.detach().float().contiguous() if value.is_floating_point() else value.contiguous()
    for name in names:
        linear = model.get_submodule(name)
        s = _runtime_scale(name, linear, act_absmax, alpha)
        q, scale = quantize_weight(linear.weight, s)
        tensors[f"{name}.weight_int8"], tensors[f"{name}.weight_scale"] = q.contiguous(), scale.contiguous()
        if s is not None:
            tensors[f"{name}.input_scale"] = s.contiguous()
        if linear.bias is not None:
            tensors[f"{name}.bias"] = linear.bias.detach().float().contiguous()
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "odyssey": "x86-int8"})
    model.config.save_pretrained(tmp)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps(
            {
                "engine": ENGINE,
                "scheme": "int8 per-channel weights; int8 activations per call when decoding, fp32 prompts",
                "smoothing_alpha": alpha if act_absmax or folded else None,
                "smoothing_folded": len(folded),
                "smoothing_runtime": len(act_absmax or {}),
                "layers": names,
                "torch": torch.__version__,
            },
            indent=2,
        )
    )
    if extra:
        (tmp / "odyssey-optimize.json").write_text(json.dumps(extra, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load(path: Path, model_class):
    """Rebuild the model saved by :func:`save`: the architecture from config.json (weights not
    initialised, so the fp32 linear weights never take memory), then the stored tensors."""
    from safetensors.torch import load_file
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights

    from odyssey.errors import OdysseyError

    path = Path(path)
    if not available():
        raise OdysseyError(
            f"{path} is an int8 model for PyTorch's x86 engine, which this PyTorch build lacks",
            hint="load it on an x86 machine, or quantize the parent with --to int8-torchao / gguf:q8_0",
        )
    meta = json.loads((path / MARKER).read_text())
    tensors = load_file(str(path / WEIGHTS))
    config = AutoConfig.from_pretrained(path)
    with no_init_weights():
        model = model_class.from_config(config, dtype=torch.float32)
    # The float tensors first, while the linear layers are still plain (their own weights were never
    # written, so they take no resident memory); then each linear layer becomes its int8 twin.
    linear_keys = {k for k in tensors if k.endswith((".weight_int8", ".weight_scale", ".input_scale"))}
    linear_keys |= {f"{n}.bias" for n in meta["layers"]}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in tensors.items() if k not in linear_keys}, strict=False
    )
    prefixes = tuple(f"{name}." for name in meta["layers"])
    missing = [k for k in missing if not k.startswith(prefixes)]
    if unexpected or missing:
        raise OdysseyError(
            f"{path / WEIGHTS} does not match its config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})",
            hint="quantize the parent again with `odyssey optimize quantize --to int8`",
        )
    for name in meta["layers"]:
        _set_module(
            model,
            name,
            Int8Linear(
                tensors[f"{name}.weight_int8"],
                tensors[f"{name}.weight_scale"],
                tensors.get(f"{name}.bias"),
                tensors.get(f"{name}.input_scale"),
            ),
        )
    if (path / "generation_config.json").exists():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()


def packed_params(model) -> int:
    """Weights held inside the int8 layers (``model.parameters()`` does not list them). A tied output
    layer is not counted again: the model has the embedding's parameters once, stored twice (fp32 for
    the lookup, int8 for the product)."""
    tied = model.get_output_embeddings() if getattr(model.config, "tie_word_embeddings", False) else None
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, Int8Linear) and m is not tied)
