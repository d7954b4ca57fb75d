"""Which modules LoRA adapts, per architecture: the one table the fine-tuning methods
(:mod:`odyssey.adapt.finetune_methods`) apply and the planner (:mod:`odyssey.select.planner`)
counts, so the planned and the trained adapter are the same size.

Attention + MLP projections (the QLoRA paper's finding: adapting every linear layer of the block
matters more than the rank). Unknown architectures use peft's ``all-linear``: every linear layer
but the output layer.
"""

from __future__ import annotations

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

LORA_TARGETS: dict[str, list[str]] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "t5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}

# Every module name some architecture adapts.
TARGET_NAMES: tuple[str, ...] = tuple(sorted({name for names in LORA_TARGETS.values() for name in names}))


def default_targets(model_type: str) -> list[str] | str:
    """The architecture's target module names, or ``"all-linear"`` for one not in the table."""
    return list(LORA_TARGETS.get(model_type, ())) or "all-linear"


def lora_param_count(model, r: int, targets: list[str] | str | None = None) -> int:
    """Trainable LoRA parameters on ``model`` (a meta-device model is enough): r*(in+out) for each
    targeted ``nn.Linear`` (``targets``: names, ``"all-linear"``, or None for the architecture's default)."""

    return sum(r * (linear.in_features + linear.out_features) for linear in _adapted_linears(model, targets))


def lora_input_features(model, targets: list[str] | str | None = None) -> int:
    """Sum of the input widths of the linears LoRA adapts (all layers): with LoRA dropout, each one keeps
    its own dropped copy of its input for the backward (:func:`odyssey.models.memory.job_components`).
    A model PEFT has already adapted is read from its LoRA layers; a plain (or meta-device) model from
    ``targets`` as :func:`lora_param_count` selects them."""
    adapted = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "in_features")]
    if adapted:
        return sum(int(m.in_features) for m in adapted)
    return sum(linear.in_features for linear in _adapted_linears(model, targets))


def _adapted_linears(model, targets: list[str] | str | None):
    import torch

    if targets is None:
        targets = default_targets(getattr(model.config, "model_type", ""))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output:
            continue
        if targets == "all-linear" or name.split(".")[-1] in targets:
            yield module
