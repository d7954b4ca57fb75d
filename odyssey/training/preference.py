"""Preference optimization as loss functions on the one loop (:func:`odyssey.training.train`).

What is here, top to bottom:

- **Data.** :class:`Pair` (prompt, chosen, rejected as token ids) and :class:`Unpaired` (one answer
  marked desirable or not, for KTO), :func:`encode_pairs` / :func:`encode_unpaired`, length-bucketed
  :func:`preference_groups` and the collators. Rows are prompt + answer, right-padded, with
  ``labels`` = -100 on the prompt and on padding (the SFT convention of :mod:`odyssey.training.sft`).
- **Log-probs.** :class:`PreferenceModule` wraps the policy so its forward returns each row's summed
  answer log-probability, with the output layer applied to answer positions only (as
  :func:`odyssey.training.sft.completion_loss` does): the prompt's logits are never built.
- **The reference.** :func:`reference_logps` runs the frozen model once over the data before training
  (for LoRA: the same network with its adapter disabled) and stores the numbers in the items, so
  training runs one model and no reference forward.
- **Losses**, each ``loss_fn(module, batch) -> (loss, metrics)`` with TRL's metric names
  (``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``, ``logps/*``):

  - :class:`DPOLoss`: -log sigmoid(beta * (ratio_chosen - ratio_rejected)), ratio = log pi - log pi_ref
    (Rafailov et al. 2023, eq. 7); ``ipo`` (Azar et al. 2023, eq. 17, per-token normalized as TRL does),
    ``hinge`` (SLiC) and ``robust`` (cDPO, with label smoothing) too;
  - :class:`SimPOLoss`: -log sigmoid(beta * (avg_chosen - avg_rejected) - gamma) on length-normalized
    log-probs, no reference (Meng et al. 2024, eq. 6);
  - :class:`ORPOLoss`: NLL of the chosen answer - lambda * log sigmoid(log odds_chosen - log odds_rejected),
    odds = p / (1 - p) of the length-normalized probability, no reference (Hong et al. 2024, eqs. 4-7);
  - :class:`KTOLoss`: 1 - sigmoid(beta * (ratio - z)) for desirable, 1 - sigmoid(beta * (z - ratio)) for
    undesirable answers, z the batch's KL estimate from mismatched (prompt, answer) pairs, clamped at 0
    and not differentiated (Ethayarajh et al. 2024, eq. 7 and section 4.1; TRL's ``KTOTrainer``);
  - :func:`reward_loss`: Bradley-Terry, -log sigmoid(r(chosen) - r(rejected)), on a sequence-classification
    head (one score read at the last real token).

``tests/training/test_preference.py`` checks every loss against TRL's own code on the same model and batch.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from odyssey.training.sft import IGNORE, _causal_parts

# ---- data --------------------------------------------------------------------------------------


@dataclass
class Pair:
    """One preference pair as ids, with the reference's summed answer log-probs once computed."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0

    @property
    def n_tokens(self) -> int:
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


@dataclass
class Unpaired:
    """One answer judged desirable or not (KTO). ``kl_ids`` is another example's answer to this prompt's
    question: the mismatched pair whose log-ratio estimates the KL reference point."""

    prompt_ids: list[int]
    completion_ids: list[int]
    desirable: bool
    kl_ids: list[int]
    ref: float = 0.0
    ref_kl: float = 0.0

    @property
    def n_tokens(self) -> int:
        return 2 * len(self.prompt_ids) + len(self.completion_ids) + len(self.kl_ids)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as the harness feeds it: chat-templated text carries its own special tokens."""
    from odyssey.prompts import has_chat_template

    return list(tokenizer(prompt, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def answer_ids(tokenizer, answer: str) -> list[int]:
    """An answer as it is generated: its tokens and the end-of-sequence token the model stops on."""
    eos = tokenizer.eos_token or ""
    text = answer if not eos or answer.endswith(eos) else answer + eos
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fit(prompt: list[int], answers: list[list[int]], max_length: int) -> list[list[int]] | None:
    """Answers cut at their end so that prompt + answer fits ``max_length`` (TRL's keep_start);
    None when the prompt leaves no room for an answer token (the example teaches nothing)."""
    room = max_length - len(prompt)
    if room < 1:
        return None
    return [a[:room] for a in answers]


def encode_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[list[Pair], int]:
    """``{prompt, chosen, rejected}`` records as :class:`Pair` items; returns them and how many were dropped."""
    out, dropped = [], 0
    for p in pairs:
        prompt = prompt_ids(tokenizer, p["prompt"])
        fitted = _fit(prompt, [answer_ids(tokenizer, p["chosen"]), answer_ids(tokenizer, p["rejected"])], max_length)
        if fitted is None:
            dropped += 1
            continue
        out.append(Pair(prompt, fitted[0], fitted[1]))
    return out, dropped


def unpair(pairs: list[dict]) -> list[dict]:
    """Each pair as two unpaired examples, TRL's ``unpair_preference_dataset`` order: every chosen answer
    (desirable), then every rejected one (undesirable)."""
    good = [{"prompt": p["prompt"], "completion": p["chosen"], "desirable": True} for p in pairs]
    bad = [{"prompt": p["prompt"], "completion": p["rejected"], "desirable": False} for p in pairs]
    return good + bad


def encode_unpaired(tokenizer, examples: list[dict], max_length: int, kl_group: int) -> tuple[list[Unpaired], int]:
    """``{prompt, completion, desirable}`` records as :class:`Unpaired` items; returns them and the number dropped.

    The KL pair of each example is the previous example's answer within consecutive groups of
    ``kl_group`` (TRL rotates the answers by one in each batch of the dataset): x_i with y_(i-1)."""
    encoded, dropped = [], 0
    for e in examples:
        prompt = prompt_ids(tokenizer, e["prompt"])
        fitted = _fit(prompt, [answer_ids(tokenizer, e["completion"])], max_length)
        if fitted is None:
            dropped += 1
            continue
        encoded.append((prompt, fitted[0], bool(e["desirable"])))
    out = []
    for start in range(0, len(encoded), kl_group):
        chunk = encoded[start : start + kl_group]
        rotated = [chunk[-1][1]] + [c[1] for c in chunk[:-1]]
        for (prompt, answer, good), other in zip(chunk, rotated):
            out.append(Unpaired(prompt, answer, good, other[: max(1, max_length - len(prompt))]))
    return out, dropped


def preference_groups(items: list, batch_size: int, seed: int = 0) -> list[list]:
    """Batches of ``batch_size`` items of near-equal length (little padding); the loop shuffles their order."""
    rng = random.Random(seed)
    order = sorted(range(len(items)), key=lambda i: (items[i].n_tokens, rng.random()))
    return [[items[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]


def _rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, answer) rows -> right-padded ``input_ids`` and ``labels`` (-100 off the answer)."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = [p + a + [pad_id] * (width - len(p) - len(a)) for p, a in rows]
    labels = [[IGNORE] * len(p) + a + [IGNORE] * (width - len(p) - len(a)) for p, a in rows]
    return torch.tensor(ids), torch.tensor(labels)


class PairCollator:
    """A group of :class:`Pair` -> one batch: the chosen rows, then the rejected rows.

    ``lm_labels`` (ORPO with its NLL on the prompt too): the chosen rows' every real token as a target.
    No attention mask: pads sit after the last real token, where causal attention never looks back
    from a real one (as :class:`odyssey.training.sft.Collator`)."""

    def __init__(self, pad_id: int, *, lm_labels: bool = False):
        self.pad_id, self.lm_labels = pad_id, lm_labels

    def __call__(self, groups):
        (group,) = groups  # train() batches whole groups
        rows = [(p.prompt_ids, p.chosen_ids) for p in group] + [(p.prompt_ids, p.rejected_ids) for p in group]
        input_ids, labels = _rows(rows, self.pad_id)
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "ref_logps": torch.tensor([p.ref_chosen for p in group] + [p.ref_rejected for p in group]),
            "num_tokens": sum(len(p) + len(a) for p, a in rows),
        }
        if self.lm_labels:
            lm = [p.prompt_ids + p.chosen_ids for p in group]
            width = input_ids.shape[1]
            batch["lm_labels"] = torch.tensor([r + [IGNORE] * (width - len(r)) for r in lm])
        return batch


class UnpairedCollator:
    """A group of :class:`Unpaired` -> the answers' rows and their KL rows (prompt + another's answer)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups):
        (group,) = groups
        input_ids, labels = _rows([(u.prompt_ids, u.completion_ids) for u in group], self.pad_id)
        kl_input_ids, kl_labels = _rows([(u.prompt_ids, u.kl_ids) for u in group], self.pad_id)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "kl_input_ids": kl_input_ids,
            "kl_labels": kl_labels,
            "desirable": torch.tensor([u.desirable for u in group]),
            "ref_logps": torch.tensor([u.ref for u in group]),
            "ref_kl_logps": torch.tensor([u.ref_kl for u in group]),
            "num_tokens": sum(len(u.prompt_ids) + len(u.completion_ids) for u in group),
        }


# ---- log-probs ---------------------------------------------------------------------------------


def token_logps(model, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log p(token t | tokens < t) at the positions ``keep`` [batch, len - 1] marks (targets shifted by one),
    flattened in row-major order. The output layer runs on those positions only, when the model allows."""
    targets = input_ids[:, 1:][keep]
    parts = _causal_parts(model)
    if parts is None:  # soft prompts, rescaled logits, encoder-decoders: the model's own forward
        logits = model(input_ids=input_ids, use_cache=False).logits
        logits = logits[:, -input_ids.shape[1] :][:, :-1][keep]  # soft prompts prepend virtual positions
    else:
        body, head, softcap = parts
        hidden = body(input_ids=input_ids, use_cache=False)[0]
        logits = head(hidden[:, :-1][keep])
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def _row_sums(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    rows = keep.nonzero()[:, 0]
    return torch.zeros(keep.shape[0], dtype=values.dtype, device=values.device).index_add(0, rows, values)


def sequence_logps(model, input_ids, labels, lm_labels=None):
    """(summed answer log-probs [rows], answer token counts [rows], mean NLL of ``lm_labels`` or None).

    ``lm_labels`` covers the first rows (ORPO's chosen rows) and asks for the prompt's logits too."""
    answer = labels[:, 1:] != IGNORE
    lm = torch.zeros_like(answer)
    if lm_labels is not None:
        lm[: lm_labels.shape[0]] = lm_labels[:, 1:] != IGNORE
    keep = answer | lm
    logps = token_logps(model, input_ids, keep)
    sums = _row_sums(logps * answer[keep], keep)
    nll = -logps[lm[keep]].mean() if lm_labels is not None else None
    return sums, answer.sum(-1), nll


class PreferenceModule(torch.nn.Module):
    """Wraps a (PEFT) causal LM so that its forward returns :func:`sequence_logps`: one module for DDP."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, lm_labels=None):
        return sequence_logps(self.model, input_ids, labels, lm_labels)

    def gradient_checkpointing_enable(self, **kwargs):
        self.model.gradient_checkpointing_enable(**kwargs)

    def enable_input_require_grads(self):
        if hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()


def reference_context(model):
    """The frozen reference: a PEFT model with its adapters disabled, else the model as it is."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def reference_logps(model, groups: list[list], collator, device=None) -> None:
    """Fill each item's reference log-probs (``ref_chosen``/``ref_rejected``, or ``ref``/``ref_kl``)
    with one pass of the frozen model over ``groups``, before training starts."""
    from odyssey.training.loop import to_device

    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    with torch.no_grad(), reference_context(model):
        for group in groups:
            batch = to_device(collator([group]), device)
            sums = sequence_logps(model, batch["input_ids"], batch["labels"])[0].tolist()
            if isinstance(group[0], Pair):
                for i, pair in enumerate(group):
                    pair.ref_chosen, pair.ref_rejected = sums[i], sums[len(group) + i]
                continue
            kl = sequence_logps(model, batch["kl_input_ids"], batch["kl_labels"])[0].tolist()
            for item, ref, ref_kl in zip(group, sums, kl):
                item.ref, item.ref_kl = ref, ref_kl
    model.train(was_training)


# ---- losses ------------------------------------------------------------------------------------


def pair_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps) -> dict[str, float]:
    """TRL's logged numbers for a batch of pairs: the implicit rewards, how often chosen wins, by how much."""
    margins = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
        "rewards/margins": float(margins.mean()),
        "logps/chosen": float(chosen_logps.detach().mean()),
        "logps/rejected": float(rejected_logps.detach().mean()),
    }


def _forward(module, batch, lm: bool = False):
    return module(batch["input_ids"], batch["labels"], batch.get("lm_labels") if lm else None)


@dataclass
class DPOLoss:
    """DPO and its pairwise relatives on the cached reference log-probs (all zero: reference-free)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0  # robust: the assumed fraction of flipped labels

    def __post_init__(self):
        if self.loss_type not in {"sigmoid", "ipo", "hinge", "robust"}:
            raise ValueError(f"unknown DPO loss_type {self.loss_type!r}: use sigmoid, ipo, hinge or robust")

    def __call__(self, module, batch):
        sums, counts, _ = _forward(module, batch)
        ratios = sums - batch["ref_logps"].to(sums.dtype)
        chosen, rejected = ratios.chunk(2)
        if self.loss_type == "ipo":
            # IPO's squared loss on per-token log-ratios: TRL normalizes by the answer length, as the IPO authors do.
            n_c, n_r = counts.clamp(min=1).chunk(2)
            losses = (chosen / n_c - rejected / n_r - 1 / (2 * self.beta)) ** 2
        elif self.loss_type == "hinge":
            losses = torch.relu(1 - self.beta * (chosen - rejected))
        elif self.loss_type == "robust":  # Chowdhury et al. 2024, eq. 7: unbiased under flipped labels
            eps, z = self.label_smoothing, self.beta * (chosen - rejected)
            losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
        else:
            losses = -F.logsigmoid(self.beta * (chosen - rejected))
        logp_c, logp_r = sums.chunk(2)
        metrics = pair_metrics(self.beta * chosen.detach(), self.beta * rejected.detach(), logp_c, logp_r)
        return losses.mean(), {**metrics, "tokens": batch["num_tokens"]}


@dataclass
class SimPOLoss:
    """SimPO: the average answer log-prob is the reward; a target margin gamma; no reference."""

    beta: float = 2.0
    gamma: float = 1.0

    def __call__(self, module, batch):
        sums, counts, _ = _forward(module, batch)
        avg_c, avg_r = (sums / counts.clamp(min=1)).chunk(2)
        losses = -F.logsigmoid(self.beta * (avg_c - avg_r) - self.gamma)
        metrics = pair_metrics(self.beta * avg_c.detach(), self.beta * avg_r.detach(), avg_c, avg_r)
        return losses.mean(), {**metrics, "tokens": batch["num_tokens"]}


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, without cancellation (Maechler 2012: switch at -log 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@dataclass
class ORPOLoss:
    """ORPO: supervised NLL on the chosen answer plus ``beta`` (the paper's lambda) times the odds-ratio term.

    ``nll_on_prompt``: the NLL over the prompt's tokens too, as TRL's ``ORPOTrainer`` and the authors'
    code compute it (TRL PR #2527); off, it is the answer-only loss of Odyssey's SFT stage."""

    beta: float = 0.1
    nll_on_prompt: bool = False

    def __call__(self, module, batch):
        sums, counts, lm_nll = _forward(module, batch, lm=self.nll_on_prompt)
        avg_c, avg_r = (sums / counts.clamp(min=1)).chunk(2)
        log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
        ratio = F.logsigmoid(log_odds)
        if self.nll_on_prompt:
            nll = lm_nll
        else:
            n_c = counts.chunk(2)[0].sum().clamp(min=1)
            nll = -sums.chunk(2)[0].sum() / n_c  # mean over the chosen answers' tokens
        loss = nll - self.beta * ratio.mean()
        metrics = pair_metrics(self.beta * avg_c.detach(), self.beta * avg_r.detach(), avg_c, avg_r)
        metrics.update(
            nll_loss=float(nll.detach()),
            log_odds_ratio=float(ratio.detach().mean()),
            log_odds_chosen=float(log_odds.detach().mean()),
        )
        return loss, {**metrics, "tokens": batch["num_tokens"]}


@dataclass
class KTOLoss:
    """KTO on unpaired answers. The reference point z is the batch's mean log-ratio on mismatched pairs
    (policy log-probs without gradient, reference log-probs cached), clamped at 0, as TRL computes it."""

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __call__(self, module, batch):
        with torch.no_grad():
            kl_logps = module(batch["kl_input_ids"], batch["kl_labels"])[0]
        sums, _, _ = _forward(module, batch)
        kl = (kl_logps - batch["ref_kl_logps"].to(sums.dtype)).mean().clamp(min=0)
        ratios = sums - batch["ref_logps"].to(sums.dtype)
        good = batch["desirable"].bool()
        chosen, rejected = ratios[good], ratios[~good]
        losses = torch.cat(
            [
                self.desirable_weight * (1 - torch.sigmoid(self.beta * (chosen - kl))),
                self.undesirable_weight * (1 - torch.sigmoid(self.beta * (kl - rejected))),
            ]
        )
        metrics: dict[str, float] = {"kl": float(kl), "tokens": batch["num_tokens"]}
        if len(chosen):
            metrics["rewards/chosen"] = float(self.beta * chosen.detach().mean())
            metrics["logps/chosen"] = float(sums[good].detach().mean())
        if len(rejected):
            metrics["rewards/rejected"] = float(self.beta * rejected.detach().mean())
            metrics["logps/rejected"] = float(sums[~good].detach().mean())
        if len(chosen) and len(rejected):
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return losses.nanmean(), metrics


# ---- the reward model --------------------------------------------------------------------------


class RewardPair(NamedTuple):
    """A pair as the reward model reads it: prompt + chosen answer and prompt + rejected answer, as ids."""

    chosen: list[int]
    rejected: list[int]

    @property
    def n_tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)


class RewardCollator:
    """Groups of :class:`RewardPair` -> the chosen rows, then the rejected rows, right-padded."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups):
        (group,) = groups
        rows = [c for c, _ in group] + [r for _, r in group]
        width = max(len(r) for r in rows)
        return {
            "input_ids": torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "num_tokens": sum(len(r) for r in rows),
        }


def reward_loss(model, batch):
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected), r the classification head's score at the last
    real token (transformers' ``*ForSequenceClassification`` finds it from the pad id)."""
    scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    chosen, rejected = scores[:, 0].float().chunk(2)
    loss = -F.logsigmoid(chosen - rejected).mean()
    margins = (chosen - rejected).detach()
    return loss, {
        "accuracy": float((margins > 0).float().mean()),
        "margin": float(margins.mean()),
        "mean_reward": float(scores.detach().mean()),
        "tokens": batch["num_tokens"],
    }
