"""The pretraining objectives' collators: masking rates, 80/10/10, span lengths, sentinel round trip."""

from __future__ import annotations

import numpy as np
import pytest

from odyssey.select.objectives import IGNORE, CausalCollator, MaskedCollator, SpanCollator, span_noise_mask

VOCAB, MASK = 1000, 4
SPECIAL = {0, 1, 2, 3, 4}


def test_causal_labels_are_inputs():
    batch = CausalCollator()([[5, 6, 7], [8, 9, 10]])
    assert batch["labels"].tolist() == batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 10]]


def test_mlm_rates_15_and_80_10_10():
    rng = np.random.default_rng(1)
    blocks = rng.integers(10, VOCAB, size=(200, 256)).tolist()
    batch = MaskedCollator(MASK, VOCAB, SPECIAL, seed=0)(blocks)
    ids, labels = np.array(blocks), batch["labels"].numpy()
    inputs = batch["input_ids"].numpy()
    chosen = labels != IGNORE
    assert chosen.mean() == pytest.approx(0.15, abs=0.005)
    assert (labels[chosen] == ids[chosen]).all()  # the label is the original token
    masked = (inputs == MASK) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    n = chosen.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.01)
    # a random replacement can draw the original token: "kept" is 10 % plus ~10 %/vocab
    assert kept.sum() / n == pytest.approx(0.1, abs=0.01)
    assert replaced.sum() / n == pytest.approx(0.1, abs=0.01)
    assert (inputs[~chosen] == ids[~chosen]).all()  # unchosen positions untouched


def test_mlm_never_masks_special_tokens():
    blocks = [[1] + list(range(10, 60)) + [2]] * 50
    batch = MaskedCollator(MASK, VOCAB, SPECIAL, seed=0)(blocks)
    assert (batch["labels"][:, 0] == IGNORE).all() and (batch["labels"][:, -1] == IGNORE).all()


def test_span_mask_density_and_mean_length():
    rng = np.random.default_rng(0)
    lengths, density = [], []
    for _ in range(300):
        mask = span_noise_mask(128, rng)
        density.append(mask.mean())
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]]))))[::2]
        lengths.extend(runs.tolist())
    assert np.mean(density) == pytest.approx(0.15, abs=0.01)
    assert np.mean(lengths) == pytest.approx(3.0, abs=0.3)


def test_span_corruption_round_trip():
    sentinels = list(range(900, 932))
    collator = SpanCollator(sentinels, eos_id=2, pad_id=0, seed=3)
    original = list(range(10, 74))
    source, target = collator.corrupt(original)
    assert source[-1] == 2 and target[-1] == 2
    # Put each sentinel's hidden tokens back: the original sequence is recovered exactly.
    spans, current = {}, None
    for token in target[:-1]:
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    rebuilt = []
    for token in source[:-1]:
        rebuilt.extend(spans[token] if token in sentinels else [token])
    assert rebuilt == original
    used = [t for t in source if t in sentinels]
    assert used == sentinels[: len(used)] and len(used) >= 2  # in order, one per span
    batch = collator([original, original[:40]])
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert (batch["labels"] == IGNORE).any()  # the shorter target is padded with IGNORE
