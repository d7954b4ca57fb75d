"""Model surgery shared by pruning and distillation: build a smaller dense model of the same
architecture from a subset of a larger one's layers, neurons or heads.

The approach works on the state dict: slice or renumber the tensors, write the smaller sizes into
the config, instantiate the architecture from that config and load the sliced weights strictly.
A strict load proves that every tensor found its place, and the result is an ordinary checkpoint
(``save_pretrained``) that transformers, llama.cpp's converter and the server load like any other.
No library does this for Llama-family models in transformers 5 (``prune_heads`` exists only for
BERT-era models and keeps per-layer shapes that config.json cannot express), hence this module.

Supported: Llama-style decoders (``model.layers.N.self_attn.{q,k,v,o}_proj`` and
``model.layers.N.mlp.{gate,up,down}_proj``: Llama, Mistral, Qwen2/3, SmolLM, Gemma...).
"""

from __future__ import annotations

import copy
import re

from odyssey.errors import OdysseyError

_LAYER = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")


def check_llama_like(model) -> None:
    names = {n for n, _ in model.named_parameters()}
    needed = [
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
    ]
    missing = [n for n in needed if n not in names]
    if missing:
        raise OdysseyError(
            f"structural changes support Llama-style decoders (gate/up/down MLP, q/k/v/o attention); "
            f"{model.config.model_type} lacks {missing[0]}",
            hint="use unstructured pruning (--unstructured) or quantization for this architecture, or pass a "
            "ready-made smaller --student that shares the tokenizer",
        )


def n_layers(model) -> int:
    return int(model.config.num_hidden_layers)


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def rebuild(model, config, state: dict):
    """Instantiate ``config``'s architecture and load ``state`` strictly (tied weights re-tied)."""
    dtype = next(model.parameters()).dtype
    fresh = type(model)._from_config(config, dtype=dtype)  # random init, then every tensor is overwritten
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise OdysseyError(f"rebuilding the smaller model failed: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if tied:
        fresh.tie_weights()
    fresh.eval()
    if hasattr(model, "generation_config"):
        fresh.generation_config = copy.deepcopy(model.generation_config)
    return fresh


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def keep_layers(model, keep: list[int]):
    """A model with only the decoder layers in ``keep`` (in order), renumbered from 0."""
    check_llama_like(model)
    total = n_layers(model)
    keep = sorted(set(int(i) for i in keep))
    if not keep or keep[0] < 0 or keep[-1] >= total:
        raise OdysseyError(f"layer indices {keep} are outside 0..{total - 1}")
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in _state(model).items():
        match = _LAYER.match(key)
        if match:
            old = int(match.group(2))
            if old not in new_index:
                continue
            key = f"{match.group(1)}{new_index[old]}{match.group(3)}"
        state[key] = value
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    return rebuild(model, config, state)


def every_other_layer(total: int, k: int) -> list[int]:
    """``k`` layers spread evenly over ``total``, always keeping the first and the last."""
    if k >= total:
        raise OdysseyError(
            f"a student with {k} layers is not smaller than its {total}-layer teacher",
            hint=f"choose student_layers below {total} (half: {max(1, total // 2)})",
        )
    if k == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (k - 1)) for i in range(k)})


def slice_mlp(model, keep: list[list[int]]):
    """Keep, in every layer i, the intermediate neurons ``keep[i]`` (same count in each layer)."""
    import torch

    check_llama_like(model)
    width = {len(k) for k in keep}
    if len(width) != 1:
        raise OdysseyError(
            "every layer must keep the same number of MLP neurons (config.intermediate_size is one number)"
        )
    state = _state(model)
    for i, idx in enumerate(keep):
        index = torch.tensor(sorted(idx))
        p = f"model.layers.{i}.mlp."
        for name in ("gate_proj", "up_proj"):
            state[p + name + ".weight"] = state[p + name + ".weight"][index].contiguous()
            if p + name + ".bias" in state:
                state[p + name + ".bias"] = state[p + name + ".bias"][index].contiguous()
        state[p + "down_proj.weight"] = state[p + "down_proj.weight"][:, index].contiguous()
    config = copy.deepcopy(model.config)
    config.intermediate_size = width.pop()
    return rebuild(model, config, state)


def slice_heads(model, keep: list[list[int]]):
    """Keep, in every layer, the query heads ``keep[i]`` (the same number per key/value group)."""
    import torch

    check_llama_like(model)
    cfg = model.config
    hd = head_dim(cfg)
    n_heads, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    counts = {len(k) for k in keep}
    if len(counts) != 1 or next(iter(counts)) % n_kv:
        raise OdysseyError("every layer must keep the same number of query heads, a multiple of the key/value heads")
    state = _state(model)
    for i, heads in enumerate(keep):
        rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in sorted(heads)])
        p = f"model.layers.{i}.self_attn."
        state[p + "q_proj.weight"] = state[p + "q_proj.weight"][rows].contiguous()
        if p + "q_proj.bias" in state:
            state[p + "q_proj.bias"] = state[p + "q_proj.bias"][rows].contiguous()
        state[p + "o_proj.weight"] = state[p + "o_proj.weight"][:, rows].contiguous()
    config = copy.deepcopy(cfg)
    config.num_attention_heads = next(iter(counts))
    config.head_dim = hd
    if n_heads == config.num_attention_heads:
        return model
    return rebuild(model, config, state)
