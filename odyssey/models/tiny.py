"""Tiny random models of every architecture family, built from configs in seconds.

Tests and dry runs use them instead of downloads: a byte-level BPE tokenizer trained on the
shipped example data (so any text encodes) and a 2-layer model per family with random weights
from a fixed seed. Model shapes are data: edit ``TINY_CONFIGS``, not code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"] + [f"<extra_id_{i}>" for i in range(8)]
VOCAB = 1024

CHATML = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

TINY_CONFIGS = {
    "llama": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    ),
    "gpt2": dict(
        model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=1024, architectures=["GPT2LMHeadModel"]
    ),
    "bert": dict(
        model_type="bert",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        architectures=["BertForMaskedLM"],
    ),
    "t5": dict(
        model_type="t5",
        d_model=64,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=16,
        architectures=["T5ForConditionalGeneration"],
    ),
    "bart": dict(
        model_type="bart",
        d_model=64,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        max_position_embeddings=1024,
        architectures=["BartForConditionalGeneration"],
    ),
}


def tiny_key(family: str) -> str:
    """Changes whenever the recipe for a tiny model changes, so caches never serve a stale one."""
    import hashlib

    recipe = json.dumps([TINY_CONFIGS[family], SPECIALS, VOCAB, CHATML, len(_corpus())], sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


def _corpus() -> list[str]:
    from odyssey.data import example_data_dir

    texts = []
    for path in sorted(example_data_dir().rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(str(v) for v in json.loads(line).values())
    return texts or ["Odyssey builds tiny models for tests. #Person1#: Hello! #Person2#: Hi there."]


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=SPECIALS[5:],
        model_max_length=1024,
    )
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def build_tiny(family: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = build_tokenizer(tmp)
    settings = dict(TINY_CONFIGS[family])
    model_type = settings.pop("model_type")
    ids = dict(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    if family in {"t5", "bart"}:
        ids["decoder_start_token_id"] = tokenizer.pad_token_id if family == "t5" else tokenizer.eos_token_id
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **settings, **ids)
    torch.manual_seed(seed)
    cls = {
        "llama": AutoModelForCausalLM,
        "gpt2": AutoModelForCausalLM,
        "bert": AutoModelForMaskedLM,
        "t5": AutoModelForSeq2SeqLM,
        "bart": AutoModelForSeq2SeqLM,
    }[family]
    model = cls.from_config(config)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
