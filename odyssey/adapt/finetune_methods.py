"""The fine-tuning methods: which parameters train, set up with peft.

- ``full``: every weight trains (16 bytes per parameter with AdamW in fp32).
- ``lora``: low-rank adapters on the attention and MLP projections (per-architecture defaults in
  :mod:`odyssey.training.lora`; ``all-linear`` or explicit names in ``adapt.lora.target_modules``);
  QLoRA loads the frozen base in 4/8 bit with bitsandbytes on a CUDA GPU.
- ``prompt_tuning``: a soft prompt of ``num_virtual_tokens`` trained embeddings, initialised from
  the task instruction's tokens (or ``init_text``); the model itself is frozen.
"""

from __future__ import annotations

from odyssey.errors import MissingDependency, OdysseyError, require
from odyssey.training.lora import default_targets

DEFAULT_LR = {"full": 3e-5, "lora": 3e-4, "prompt_tuning": 3e-2}


def lora_targets(model, requested) -> list[str] | str:
    """The target module names for ``model``: the request, the architecture's default, or all-linear."""
    if requested:
        names = requested
    else:
        names = default_targets(getattr(model.config, "model_type", ""))  # odyssey.training.lora
    if names == "all-linear":
        return names
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [n for n in names if n in present]
    if not found:
        raise OdysseyError(
            f"adapt.lora.target_modules {names} match no module of {model.config.model_type}",
            hint=f"use 'all-linear' or names such as {sorted(n for n in present if n)[:12]}",
        )
    return found


def apply_method(model, method: str, aspec, *, seq2seq: bool, tokenizer_path=None, instruction: str = ""):
    """Return the model to train (a PeftModel for lora/prompt_tuning) with only the right weights trainable."""
    if method == "full":
        model.requires_grad_(True)
        return model
    peft = require("peft", "adapt", "LoRA and prompt tuning")
    task_type = peft.TaskType.SEQ_2_SEQ_LM if seq2seq else peft.TaskType.CAUSAL_LM
    if method == "lora":
        lora = aspec.lora
        config = peft.LoraConfig(
            task_type=task_type,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(model, lora.target_modules),
            fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",
        )
        return peft.get_peft_model(model, config)
    if method == "prompt_tuning":
        pt = aspec.prompt_tuning
        text = instruction if pt.init_text is None else pt.init_text
        if text and text != "random":
            config = peft.PromptTuningConfig(
                task_type=task_type,
                num_virtual_tokens=pt.num_virtual_tokens,
                prompt_tuning_init=peft.PromptTuningInit.TEXT,
                prompt_tuning_init_text=text,
                tokenizer_name_or_path=str(tokenizer_path),
            )
        else:
            config = peft.PromptTuningConfig(
                task_type=task_type,
                num_virtual_tokens=pt.num_virtual_tokens,
                prompt_tuning_init=peft.PromptTuningInit.RANDOM,
            )
        return peft.get_peft_model(model, config)
    raise OdysseyError(f"unknown fine-tuning method {method!r}", hint="use full, lora or prompt_tuning")


def load_quantized(path, quantize: str, seq2seq: bool):
    """QLoRA: the frozen base in 4-bit NF4 (or 8-bit) with bitsandbytes. Needs a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise OdysseyError(
            f"adapt.lora.quantize: {quantize} (QLoRA) needs a CUDA GPU; none is available here",
            hint="remove adapt.lora.quantize to train plain LoRA on this machine",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            "QLoRA needs the Python package 'bitsandbytes'", hint="pip install bitsandbytes"
        ) from exc
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    if quantize == "4bit":
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = cls.from_pretrained(path, quantization_config=bnb, device_map={"": 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
