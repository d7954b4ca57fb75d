"""Structured pruning builds a genuinely smaller dense model that computes exactly what the
original computes with the removed units switched off; importance scores decide what goes."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from odyssey.errors import OdysseyError  # noqa: E402
from odyssey.optimize import pruning, surgery  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    from odyssey.models import load

    return load("tiny:llama")


def _logits(model, ids=None):
    ids = ids if ids is not None else torch.tensor([[1, 17, 40, 99, 5, 8, 300, 12]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def _batches(tok):
    texts = ["#Person1#: Hello, how are you? #Person2#: Fine, thanks.", "Summarize: the meeting moved to Monday."]
    enc = tok(texts, return_tensors="pt", padding=True)
    return [{"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}]


def test_keep_all_layers_is_identical(tiny):
    same = surgery.keep_layers(tiny.model, [0, 1])
    assert torch.allclose(_logits(same), _logits(tiny.model), atol=1e-6)


def test_every_other_layer():
    assert surgery.every_other_layer(30, 15) == sorted(set(surgery.every_other_layer(30, 15)))
    picked = surgery.every_other_layer(30, 15)
    assert len(picked) == 15 and picked[0] == 0 and picked[-1] == 29
    with pytest.raises(OdysseyError, match="not smaller"):
        surgery.every_other_layer(4, 4)


def test_slice_mlp_equals_masking_the_removed_neurons(tiny):
    model = tiny.model
    width = model.config.intermediate_size
    keep = [list(range(0, width, 2)) + [1], list(range(width // 2))]
    keep = [k[: width // 2] for k in keep]
    small = surgery.slice_mlp(model, keep)
    assert small.config.intermediate_size == width // 2
    assert small.model.layers[0].mlp.down_proj.weight.shape[1] == width // 2
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for i, kept in enumerate(keep):
            drop = [j for j in range(width) if j not in kept]
            masked.model.layers[i].mlp.down_proj.weight[:, drop] = 0
    assert torch.allclose(_logits(small), _logits(masked), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_slice_heads_equals_masking_the_removed_heads(tiny):
    model = tiny.model
    hd = surgery.head_dim(model.config)
    keep = [[0, 3], [1, 2]]  # one query head from each of the two key/value groups (heads 0-1, 2-3)
    small = surgery.slice_heads(model, keep)
    assert small.config.num_attention_heads == 2 and small.config.num_key_value_heads == 2
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for i, kept in enumerate(keep):
            for h in range(model.config.num_attention_heads):
                if h not in kept:
                    masked.model.layers[i].self_attn.o_proj.weight[:, h * hd : (h + 1) * hd] = 0
    assert torch.allclose(_logits(small), _logits(masked), atol=1e-5)


def test_mlp_importance_removes_dead_neurons(tiny):
    model = copy.deepcopy(tiny.model)
    width = model.config.intermediate_size
    dead = list(range(0, width, 4))  # a quarter of the neurons contribute nothing
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, dead] = 0
    small, info = pruning.structured_prune(model, "mlp", 0.25, _batches(tiny.tokenizer))
    assert info["intermediate_size"] == [width, width * 3 // 4]
    # removing exactly the dead neurons changes nothing
    assert torch.allclose(_logits(small), _logits(model), atol=1e-5)


def test_block_influence_removes_the_layer_that_does_nothing(tiny):
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():  # layer 1 becomes the identity: both residual branches add zero
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    small, info = pruning.structured_prune(model, "layers", 0.5, _batches(tiny.tokenizer))
    assert info["removed_layers"] == [1]
    assert info["block_influence"][1] < 1e-6 < info["block_influence"][0]
    assert small.config.num_hidden_layers == 1
    assert torch.allclose(_logits(small), _logits(model), atol=1e-4)


def test_heads_sparsity_that_breaks_groups_is_refused(tiny):
    with pytest.raises(OdysseyError, match="key/value group"):
        pruning.structured_prune(copy.deepcopy(tiny.model), "heads", 0.1, _batches(tiny.tokenizer))


def test_magnitude_pruning_zeroes_the_smallest_weights(tiny):
    model = copy.deepcopy(tiny.model)
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    embeddings = model.model.embed_tokens.weight.detach().clone()
    info = pruning.magnitude_prune(model, 0.6)
    assert info["achieved_sparsity"] == pytest.approx(0.6, abs=0.01)
    after = model.model.layers[0].mlp.up_proj.weight.detach()
    zeroed = after == 0
    assert before[zeroed].abs().max() <= before[~zeroed].abs().min()
    assert info["sparse_csr_linear_mb"] < info["dense_linear_mb"]  # above 50 % sparsity CSR pays off
    assert torch.equal(model.model.embed_tokens.weight, embeddings)  # only decoder-block linears are pruned


def test_non_llama_architectures_get_a_clear_error():
    from odyssey.models import load

    gpt2 = load("tiny:gpt2")
    with pytest.raises(OdysseyError, match="Llama-style"):
        surgery.keep_layers(gpt2.model, [0])
