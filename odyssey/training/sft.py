"""Supervised fine-tuning pieces on top of :func:`odyssey.training.train`: examples -> token ids with
the loss on completion tokens only, batches without pad waste, and a loss that computes logits
only where there is a label.

Where the compute goes (SmolLM2-135M): the output layer (49,152 x 576 = 28 M weights) is a fifth
of the model, and a summary is ~10% of an example's tokens. A plain ``model(**batch, labels=...)``
multiplies every position's hidden state by that matrix, then throws 90% of the logits away in
the loss. :class:`CompletionLoss` runs the transformer body, picks the hidden states whose *next*
token is a completion token, and applies the output layer to those alone: the same loss, with
~18% less compute and a logits tensor ten times smaller. (transformers' ``logits_to_keep`` takes
one index set for the whole batch, so it cannot select per-example completion positions.)

Batches (``packing``):

- ``bucket`` (default): examples sorted by length and cut into batches under a token budget, so the
  few pad tokens left are within a bucket of near-equal lengths; batches are shuffled each epoch.
- ``pack``: several examples share a row; ``position_ids`` restart at 0 for each, and with no
  ``attention_mask`` transformers builds a block-diagonal causal mask from them, so no example
  attends to another (tested: packed logits equal unpacked logits).
- ``pad``: random batches padded to their longest example (the common recipe; for comparison).

Nothing here hand-rolls what a library does: the chat template and tokenization are the
tokenizer's, masks are transformers', the loss is ``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class Encoded:
    """One training example as ids: ``labels`` is -100 on the prompt (decoder-only) and on padding."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def completion_text(tokenizer, prompt: str, messages: list[dict], target: str) -> str:
    """The text that follows ``prompt`` when the assistant answers ``target`` (its end-of-turn included)."""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=False)
        if full.startswith(prompt):
            return full[len(prompt) :]
        # Templates that rewrite earlier turns: fall back to the answer and the end-of-sequence token.
    return " " + target + (tokenizer.eos_token or "")


def encode_example(tokenizer, cfg, example, *, max_len: int, seq2seq: bool = False) -> Encoded:
    """Render ``example`` with the candidate's prompt (:mod:`odyssey.prompts`, zero-shot) and tokenize.

    Decoder-only: ``input_ids`` = prompt + completion, ``labels`` = -100 on the prompt. Seq2seq:
    ``input_ids`` = the prompt (encoder), ``labels`` = the completion (decoder). Long inputs are cut
    with the same rule the harness uses at evaluation time, so training and serving see one prompt.
    """
    from odyssey.data import Example
    from odyssey.prompts import _messages, has_chat_template, render, render_text

    target = example.target
    if seq2seq:
        labels = tokenizer(text_target=target, truncation=True, max_length=max(max_len // 4, 16))["input_ids"]
        rendered = render(tokenizer, cfg, example, [], budget=max_len)
        ids = tokenizer(rendered.text, truncation=True, max_length=max_len)["input_ids"]
        return Encoded(list(ids), list(labels), rendered.truncated_input)
    chat = has_chat_template(tokenizer)
    first = render(tokenizer, cfg, example, [], budget=max_len)
    # What follows the prompt depends on the template and the answer only: find it on a one-word input,
    # so that a long input the render had to cut does not matter.
    stub = Example(example.id, "x", example.references, None)
    completion = completion_text(tokenizer, render_text(tokenizer, cfg, stub, []), _messages(cfg, stub, []), target)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids[: max(max_len // 2, 8)]  # a runaway reference never crowds out the input
    budget = max_len - len(completion_ids)
    rendered = render(tokenizer, cfg, example, [], budget=budget) if first.n_tokens > budget else first
    prompt_ids = tokenizer(rendered.text, add_special_tokens=not chat)["input_ids"]
    if len(prompt_ids) + len(completion_ids) > max_len:  # render() counts without BOS; keep the limit exact
        prompt_ids = prompt_ids[: max_len - len(completion_ids)]
    ids = list(prompt_ids) + list(completion_ids)
    labels = [IGNORE] * len(prompt_ids) + list(completion_ids)
    return Encoded(ids, labels, rendered.truncated_input)


def data_hash(encoded: list[Encoded]) -> str:
    """A fingerprint of exactly what was trained on (ids and label masks)."""
    digest = hashlib.sha256()
    for item in encoded:
        digest.update(json.dumps([item.input_ids, item.labels]).encode())
    return digest.hexdigest()[:16]


# ---- batching ----------------------------------------------------------------------------------


def _tokens(item: Encoded, seq2seq: bool) -> int:
    return len(item.input_ids) + (len(item.labels) if seq2seq else 0)


def bucket_groups(
    items: list[Encoded], *, batch_tokens: int, batch_size: int, seed: int = 0, seq2seq: bool = False
) -> list[list[Encoded]]:
    """Length-sorted groups whose padded size (rows x longest) stays within ``batch_tokens``."""
    rng = random.Random(seed)
    order = sorted(range(len(items)), key=lambda i: (_tokens(items[i], seq2seq), rng.random()))
    groups, current, longest = [], [], 0
    for index in order:
        length = _tokens(items[index], seq2seq)
        new_longest = max(longest, length)
        if current and ((len(current) + 1) * new_longest > batch_tokens or len(current) >= batch_size):
            groups.append(current)
            current, new_longest = [], length
        current.append(items[index])
        longest = new_longest
    if current:
        groups.append(current)
    return groups


def random_groups(items: list[Encoded], *, batch_size: int, seed: int = 0) -> list[list[Encoded]]:
    """Plain random batches of ``batch_size`` (the ``pad`` recipe)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [[items[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]


def pack_groups(items: list[Encoded], *, max_len: int, batch_tokens: int) -> list[list[list[Encoded]]]:
    """Best-fit-decreasing packing into rows of at most ``max_len`` tokens, rows grouped under the budget.

    Returns groups of rows; a row is a list of examples that share it.
    """
    rows: list[list[Encoded]] = []
    room: list[int] = []
    for item in sorted(items, key=lambda e: -len(e.input_ids)):
        n = len(item.input_ids)
        best = min((i for i, r in enumerate(room) if r >= n), key=lambda i: room[i], default=None)
        if best is None:
            rows.append([item])
            room.append(max_len - n)
        else:
            rows[best].append(item)
            room[best] -= n
    per_group = max(1, batch_tokens // max_len)
    return [rows[i : i + per_group] for i in range(0, len(rows), per_group)]


class Collator:
    """Groups of :class:`Encoded` -> tensors. For ``pack``, each group element is a row of examples."""

    def __init__(self, pad_id: int, *, seq2seq: bool = False, packed: bool = False):
        self.pad_id, self.seq2seq, self.packed = pad_id, seq2seq, packed

    def __call__(self, groups):
        (group,) = groups  # train() batches whole groups, one per process
        if self.packed:
            return self._packed(group)
        if self.seq2seq:
            enc = max(len(e.input_ids) for e in group)
            dec = max(len(e.labels) for e in group)
            return {
                "num_tokens": sum(len(e.input_ids) + len(e.labels) for e in group),
                "input_ids": torch.tensor([e.input_ids + [self.pad_id] * (enc - len(e.input_ids)) for e in group]),
                "attention_mask": torch.tensor(
                    [[1] * len(e.input_ids) + [0] * (enc - len(e.input_ids)) for e in group]
                ),
                "labels": torch.tensor([e.labels + [IGNORE] * (dec - len(e.labels)) for e in group]),
            }
        width = max(len(e.input_ids) for e in group)
        # No attention mask: pads sit after the last real token, and under causal attention no real token
        # looks right, so the mask changes nothing they compute (pad positions get no loss). Without it,
        # SDPA takes its is_causal path instead of materializing a [batch, 1, len, len] mask.
        return {
            "num_tokens": sum(len(e.input_ids) for e in group),
            "input_ids": torch.tensor([e.input_ids + [self.pad_id] * (width - len(e.input_ids)) for e in group]),
            "labels": torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in group]),
        }

    def _packed(self, rows):
        width = max(sum(len(e.input_ids) for e in row) for row in rows)
        ids, labels, positions = [], [], []
        for row in rows:
            r_ids, r_labels, r_pos = [], [], []
            for e in row:
                r_ids += e.input_ids
                # The first token of each example must not be predicted from the previous example.
                r_labels += [IGNORE] + e.labels[1:]
                r_pos += list(range(len(e.input_ids)))
            fill = width - len(r_ids)
            # Padding forms its own segment (positions restart at 0), so nothing attends across it.
            ids.append(r_ids + [self.pad_id] * fill)
            labels.append(r_labels + [IGNORE] * fill)
            positions.append(r_pos + list(range(fill)))
        return {
            "num_tokens": sum(len(e.input_ids) for row in rows for e in row),
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(positions),
        }


# ---- the loss ----------------------------------------------------------------------------------


def _causal_parts(model):
    """(body, head, softcap) of a decoder-only LM (under a PEFT wrapper too), or None when unsure."""

    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return None  # soft prompts are prepended inside PeftModel.forward: use it
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(inner, "base_model_prefix", None)
    body = getattr(inner, prefix, None) if prefix else None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    config = getattr(inner, "config", None)
    if body is None or not isinstance(head, torch.nn.Linear) or getattr(config, "is_encoder_decoder", False):
        return None
    if any(getattr(config, k, None) for k in ("logit_scale", "logits_scaling", "output_multiplier")):
        return None  # architectures that rescale logits: use the model's own forward
    return body, head, getattr(config, "final_logit_softcapping", None)


def completion_loss(model, input_ids, labels, attention_mask=None, position_ids=None):
    """Mean completion-token cross-entropy and the number of completion tokens (logits only there)."""

    shifted = labels[:, 1:] if labels.shape == input_ids.shape else labels  # decoder-only labels shift by one
    n_tokens = int((shifted != IGNORE).sum())
    parts = _causal_parts(model)
    if parts is None or labels.shape != input_ids.shape:
        # use_cache=False matters for packing: with a KV cache transformers skips packed-sequence detection
        # from position_ids, and packed examples would attend to each other.
        kwargs = {"input_ids": input_ids, "labels": labels, "use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        return model(**kwargs).loss, n_tokens
    body, head, softcap = parts
    kwargs = {"input_ids": input_ids, "use_cache": False}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    hidden = body(**kwargs)[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep])
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), targets[keep]), n_tokens


class SFTModule(torch.nn.Module):
    """Wraps a (PEFT) model so that its forward returns the completion loss: one module for DDP to wrap."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None):
        return completion_loss(self.model, input_ids, labels, attention_mask, position_ids)

    def gradient_checkpointing_enable(self, **kwargs):
        self.model.gradient_checkpointing_enable(**kwargs)

    def enable_input_require_grads(self):
        if hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()


def sft_loss(module, batch):
    """``loss_fn`` for ``train(SFTModule(model), groups, sft_loss, collate_fn=Collator(...))``.

    ``tokens`` (what throughput counts) are all real tokens processed, prompt and completion; pads are not.
    """
    batch = dict(batch)
    real = batch.pop("num_tokens", None)
    loss, n_completion = module(**batch)
    return loss, {"tokens": int(real) if real is not None else int(batch["input_ids"].numel())}


def mean_loss(model, groups, collator, device) -> float:
    """Token-weighted mean completion loss of ``model`` over batches (for validation loss)."""
    from odyssey.training import to_device

    total, count = 0.0, 0
    with torch.no_grad():
        for group in groups:
            batch = to_device(collator([group]), device)
            batch.pop("num_tokens", None)
            loss, n = completion_loss(model, **batch)
            total += float(loss) * n
            count += n
    return total / max(count, 1)
