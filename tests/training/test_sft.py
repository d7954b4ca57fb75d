"""SFT pieces on the tiny Llama: completion-only labels, batches without pad waste, packing without
cross-example attention, and a loss with logits only on completion tokens equal to the model's own."""

from __future__ import annotations

import pytest
import torch

from odyssey.data import Example
from odyssey.models import load
from odyssey.prompts import PromptConfig, render
from odyssey.training.sft import (
    IGNORE,
    Collator,
    SFTModule,
    bucket_groups,
    completion_loss,
    data_hash,
    encode_example,
    pack_groups,
    random_groups,
)

EXAMPLES = [
    Example(
        str(i),
        "#Person1#: " + "can you help me with the report " * (1 + i % 4) + "#Person2#: Sure.",
        (f"#Person2# helps #Person1# with report {i}.",),
    )
    for i in range(10)
]


@pytest.fixture(scope="module")
def tiny():
    return load("tiny:llama")


def test_labels_cover_only_the_completion_and_the_prompt_is_the_served_one(tiny):
    tok = tiny.tokenizer
    cfg = PromptConfig.default("summarization")
    enc = encode_example(tok, cfg, EXAMPLES[1], max_len=512)
    n_prompt = sum(1 for label in enc.labels if label == IGNORE)
    assert 0 < n_prompt < len(enc.labels)
    assert all(x == IGNORE for x in enc.labels[:n_prompt]) and all(x != IGNORE for x in enc.labels[n_prompt:])
    # the prompt part is exactly what the harness renders at evaluation time
    served = render(tok, cfg, EXAMPLES[1], [], budget=512).text
    assert tok.decode(enc.input_ids[:n_prompt]) == served
    completion = tok.decode(enc.input_ids[n_prompt:])
    assert completion.startswith(EXAMPLES[1].target) and tok.eos_token in completion  # the model learns to stop


def test_long_inputs_are_cut_but_the_completion_kept(tiny):
    long = Example("l", "#Person1#: " + "blah " * 2000, ("A short summary.",))
    enc = encode_example(tiny.tokenizer, PromptConfig.default("summarization"), long, max_len=128)
    assert len(enc.input_ids) <= 128 and enc.truncated
    assert tiny.tokenizer.decode([t for t in enc.labels if t != IGNORE]).startswith("A short summary.")


def test_seq2seq_encoding_puts_the_target_in_the_decoder():
    t5 = load("tiny:t5")
    enc = encode_example(t5.tokenizer, PromptConfig.default("summarization"), EXAMPLES[0], max_len=256, seq2seq=True)
    assert all(label != IGNORE for label in enc.labels)
    assert t5.tokenizer.decode(enc.labels, skip_special_tokens=True).strip() == EXAMPLES[0].target


def test_completion_only_logits_give_the_models_own_loss(tiny):
    cfg = PromptConfig.default("summarization")
    items = [encode_example(tiny.tokenizer, cfg, ex, max_len=256) for ex in EXAMPLES[:4]]
    batch = Collator(tiny.tokenizer.pad_token_id)([items])
    batch.pop("num_tokens")
    assert "attention_mask" not in batch  # right padding under causal attention needs none (see Collator)
    lengths = torch.tensor([len(e.input_ids) for e in items])
    mask = (torch.arange(batch["input_ids"].shape[1])[None] < lengths[:, None]).long()
    assert mask.min() == 0  # the batch really has padding
    fast, n = completion_loss(tiny.model, **batch)
    # reference: full logits, the attention mask, HF's shifted cross-entropy with -100 ignored
    reference = tiny.model(**batch, attention_mask=mask).loss
    assert fast.item() == pytest.approx(reference.item(), abs=1e-5)
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    # gradients agree too
    fast.backward()
    g_fast = tiny.model.model.layers[0].mlp.up_proj.weight.grad.clone()
    tiny.model.zero_grad()
    tiny.model(**batch, attention_mask=mask).loss.backward()
    assert torch.allclose(g_fast, tiny.model.model.layers[0].mlp.up_proj.weight.grad, atol=1e-6)
    tiny.model.zero_grad()


def test_packing_has_no_cross_example_attention(tiny):
    cfg = PromptConfig.default("summarization")
    items = [encode_example(tiny.tokenizer, cfg, ex, max_len=256) for ex in EXAMPLES[:3]]
    packed = Collator(tiny.tokenizer.pad_token_id, packed=True)([[items]])
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for packed sequences
        together = tiny.model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        leaky = tiny.model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0]
        assert not torch.allclose(together, leaky, atol=1e-3)  # the check below can fail
        start = 0
        for item in items:
            alone = tiny.model(input_ids=torch.tensor([item.input_ids])).logits[0]
            piece = together[start : start + len(item.input_ids)]
            assert torch.allclose(piece, alone, atol=1e-4), "a packed example saw its neighbours"
            start += len(item.input_ids)
    # and the packed loss equals the loss over the same examples padded
    padded = Collator(tiny.tokenizer.pad_token_id)([items])
    p_loss, p_n = completion_loss(tiny.model, **{k: v for k, v in packed.items() if k != "num_tokens"})
    b_loss, b_n = completion_loss(tiny.model, **{k: v for k, v in padded.items() if k != "num_tokens"})
    assert p_n == b_n and p_loss.item() == pytest.approx(b_loss.item(), abs=1e-5)


def test_buckets_waste_less_padding_than_random_batches(tiny):
    cfg = PromptConfig.default("summarization")
    items = [encode_example(tiny.tokenizer, cfg, ex, max_len=512) for ex in EXAMPLES * 3]

    def pad_fraction(groups):
        real = sum(len(e.input_ids) for g in groups for e in g)
        held = sum(len(g) * max(len(e.input_ids) for e in g) for g in groups)
        return (held - real) / held

    buckets = bucket_groups(items, batch_tokens=1024, batch_size=8)
    assert sorted(id(e) for g in buckets for e in g) == sorted(id(e) for e in items)
    assert all(len(g) * max(len(e.input_ids) for e in g) <= 1024 for g in buckets if len(g) > 1)
    assert pad_fraction(buckets) < pad_fraction(random_groups(items, batch_size=4)) / 2
    rows = pack_groups(items, max_len=512, batch_tokens=1024)
    assert all(sum(len(e.input_ids) for e in row) <= 512 for g in rows for row in g)
    assert sum(len(row) for g in rows for row in g) == len(items)


def test_sft_module_trains_through_the_shared_loop(tiny, tmp_path):
    from odyssey.training import TrainConfig, train
    from odyssey.training.sft import sft_loss

    model = load("tiny:llama").model
    cfg = PromptConfig.default("summarization")
    items = [encode_example(load("tiny:llama").tokenizer, cfg, ex, max_len=256) for ex in EXAMPLES]
    groups = bucket_groups(items, batch_tokens=512, batch_size=4)
    result = train(
        SFTModule(model),
        groups * 3,
        sft_loss,
        TrainConfig(output_dir=tmp_path, epochs=1, learning_rate=3e-3, batch_size=1, log_every=1),
        collate_fn=Collator(0),
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.3
    assert result.tokens == 3 * sum(len(e.input_ids) for e in items)  # real tokens, no pads
    assert data_hash(items) == data_hash(list(items)) != data_hash(items[:-1])
