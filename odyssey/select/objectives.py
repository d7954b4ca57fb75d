"""The three pretraining objectives as collators over packed token blocks.

- causal LM (decoder-only): predict every next token; labels are the inputs (the model shifts them).
- masked LM (encoder-only; Devlin et al. 2019, BERT section 3.1): 15 % of the positions are chosen;
  of those 80 % become [MASK], 10 % a random token, 10 % stay; only chosen positions are scored.
- span corruption (encoder-decoder; Raffel et al. 2020, T5 section 3.1.4): 15 % of the tokens, in spans
  of mean length 3, are replaced in the input by one sentinel each; the target lists each sentinel
  followed by the tokens it hid, then EOS.

transformers' DataCollatorForLanguageModeling does MLM, but not T5's span corruption (that lives only
in the Flax example scripts), so span corruption is written here; MLM is written next to it so the
two share one seeded generator and one block format, and both are tested for their statistics.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100


class CausalCollator:
    def __call__(self, blocks: list[list[int]]) -> dict:
        import torch

        ids = torch.tensor(blocks, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class MaskedCollator:
    def __init__(self, mask_id: int, vocab_size: int, special_ids: set[int], probability: float = 0.15, seed: int = 0):
        self.mask_id, self.vocab_size, self.special = mask_id, vocab_size, np.array(sorted(special_ids))
        self.probability = probability
        self.rng = np.random.default_rng(seed)

    def mask(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs, labels = ids.copy(), np.full_like(ids, IGNORE)
        maskable = ~np.isin(ids, self.special)
        chosen = (self.rng.random(ids.shape) < self.probability) & maskable
        labels[chosen] = ids[chosen]
        roll = self.rng.random(ids.shape)
        inputs[chosen & (roll < 0.8)] = self.mask_id
        random_pos = chosen & (roll >= 0.8) & (roll < 0.9)
        inputs[random_pos] = self.rng.integers(0, self.vocab_size, size=int(random_pos.sum()))
        return inputs, labels  # the remaining 10 % of chosen positions keep their token

    def __call__(self, blocks: list[list[int]]) -> dict:
        import torch

        inputs, labels = self.mask(np.array(blocks, dtype=np.int64))
        ids = torch.from_numpy(inputs)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.from_numpy(labels)}


def span_noise_mask(length: int, rng: np.random.Generator, density: float = 0.15, mean_span: float = 3.0) -> np.ndarray:
    """Boolean mask of ``length`` with about ``density`` noise in spans of mean length ``mean_span``
    (T5's random_spans_noise_mask: the noise and the kept tokens are each cut into random segments)."""
    n_noise = max(1, min(length - 1, int(round(length * density))))
    n_spans = max(1, int(round(n_noise / mean_span)))
    n_keep = length - n_noise

    def segments(total: int, parts: int) -> np.ndarray:
        # A random composition of ``total`` into ``parts`` positive pieces.
        cuts = (
            np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
        )
        return np.diff(np.concatenate([[0], cuts, [total]]))

    n_spans = min(n_spans, n_noise, n_keep)
    noise_lengths, keep_lengths = segments(n_noise, n_spans), segments(n_keep, n_spans)
    mask = np.zeros(length, dtype=bool)
    pos = 0
    for keep, noise in zip(keep_lengths, noise_lengths):  # start with kept text, as T5 does
        pos += keep
        mask[pos : pos + noise] = True
        pos += noise
    return mask


class SpanCollator:
    def __init__(
        self,
        sentinel_ids: list[int],
        eos_id: int,
        pad_id: int,
        density: float = 0.15,
        mean_span: float = 3.0,
        seed: int = 0,
    ):
        self.sentinels, self.eos, self.pad = list(sentinel_ids), eos_id, pad_id
        self.density, self.mean_span = density, mean_span
        self.rng = np.random.default_rng(seed)

    def corrupt(self, ids: list[int]) -> tuple[list[int], list[int]]:
        mask = span_noise_mask(len(ids), self.rng, self.density, self.mean_span)
        inputs, targets, sentinel = [], [], 0
        i = 0
        while i < len(ids):
            if mask[i]:
                if sentinel >= len(self.sentinels):  # out of sentinels: keep the rest uncorrupted
                    inputs.extend(ids[i:])
                    break
                token = self.sentinels[sentinel]
                sentinel += 1
                inputs.append(token)
                targets.append(token)
                while i < len(ids) and mask[i]:
                    targets.append(ids[i])
                    i += 1
            else:
                inputs.append(ids[i])
                i += 1
        return inputs + [self.eos], targets + [self.eos]

    def __call__(self, blocks: list[list[int]]) -> dict:
        import torch

        pairs = [self.corrupt(list(b)) for b in blocks]
        n_in = max(len(p[0]) for p in pairs)
        n_out = max(len(p[1]) for p in pairs)
        inputs = torch.full((len(pairs), n_in), self.pad, dtype=torch.long)
        attention = torch.zeros_like(inputs)
        labels = torch.full((len(pairs), n_out), IGNORE, dtype=torch.long)
        for row, (src, tgt) in enumerate(pairs):
            inputs[row, : len(src)] = torch.tensor(src)
            attention[row, : len(src)] = 1
            labels[row, : len(tgt)] = torch.tensor(tgt)
        return {"input_ids": inputs, "attention_mask": attention, "labels": labels}


def lm_loss(model, batch):
    """The model's own LM loss (shifted CE for causal, masked CE for MLM, decoder CE for span)."""
    out = model(**batch)
    seen = int(batch["attention_mask"].sum())  # tokens the model read (MLM scores only 15 % of them)
    return out.loss, {"tokens": seen}
