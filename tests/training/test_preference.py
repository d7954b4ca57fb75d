"""Preference losses on the one loop: each checked against TRL's own loss code on the same tiny model and
batch (to 1e-5), and each trains a tiny model a few steps in the right direction.

TRL 1.16 has every method: ``DPOTrainer`` and ``KTOTrainer`` (stable), ``ORPOTrainer`` and ``CPOTrainer``
(``loss_type="simpo"``) in ``trl.experimental``, ``RewardTrainer``. Their losses are methods of the
trainers, so each test builds TRL's trainer on the tiny model, takes a batch from TRL's own collator and
calls TRL's loss method on it; ours runs on the same token ids.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from odyssey.training.preference import (
    DPOLoss,
    KTOLoss,
    ORPOLoss,
    PairCollator,
    PreferenceModule,
    RewardCollator,
    SimPOLoss,
    UnpairedCollator,
    encode_pairs,
    encode_unpaired,
    preference_groups,
    reference_logps,
    reward_loss,
    sequence_logps,
    unpair,
)
from odyssey.training.sft import IGNORE

trl = pytest.importorskip("trl")

TOPICS = ["the bus", "lunch", "a very long meeting about the budget", "cats", "the report", "my keys"]
ROWS = [
    {"prompt": f"Tell me about {t}.\n", "chosen": f"Happy to help with {t}.", "rejected": f"No, {t} is dull."}
    for t in TOPICS
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    """(reference, policy, tokenizer): the policy is the reference with every weight nudged, so that
    log-ratios are not zero and the losses are not at their trivial value log 2."""
    from odyssey.models import load

    loaded = load("tiny:llama", dtype="float32")
    ref = loaded.model.eval()
    policy = copy.deepcopy(ref)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return ref, policy, loaded.tokenizer


def _args(config_cls, tmp_path, **kwargs):
    from odyssey.align.common import trl_cpu_args

    return config_cls(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, max_length=128, **kwargs, **trl_cpu_args()
    )


def _dataset(rows):
    import datasets

    datasets.disable_progress_bars()
    return datasets.Dataset.from_list(rows)


def _trl_batch(trainer, indices):
    ds = trainer.train_dataset
    batch = trainer.data_collator([ds[i] for i in indices])
    return {k: v.to(trainer.accelerator.device) if hasattr(v, "to") else v for k, v in batch.items()}


def _ours_from_completion_mask(batch, ref):
    """TRL's DPO/KTO batch (input_ids + completion_mask, right-padded after flush_left) in our format."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)
    with torch.no_grad():
        ref_logps = sequence_logps(ref, batch["input_ids"], labels)[0]
    return {"input_ids": batch["input_ids"], "labels": labels, "ref_logps": ref_logps, "num_tokens": 0}


def _close(ours: dict, theirs: dict, keys):
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], abs=ATOL), key


PAIR_KEYS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"]


def test_answer_logits_only_equal_the_full_forward(tiny):
    """Logits on answer positions only (the output layer skips the prompt) give the full forward's numbers."""
    _, policy, tok = tiny
    pairs, _ = encode_pairs(tok, ROWS, max_length=128)
    batch = PairCollator(tok.pad_token_id)([pairs[:3]])
    sums, counts, _ = sequence_logps(policy, batch["input_ids"], batch["labels"])
    with torch.no_grad():
        logits = policy(input_ids=batch["input_ids"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    full = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(sums, (full * mask).sum(-1), atol=1e-5)
    assert counts.tolist() == mask.sum(-1).tolist()


def test_tokenized_pairs_are_trls(tiny, tmp_path):
    """encode_pairs + PairCollator make the token ids and answer masks TRL's DPO collator makes."""
    ref, policy, tok = tiny
    trainer = trl.DPOTrainer(
        model=policy,
        ref_model=ref,
        args=_args(trl.DPOConfig, tmp_path),
        train_dataset=_dataset(ROWS),
        processing_class=tok,
    )
    theirs = _trl_batch(trainer, range(4))
    pairs, dropped = encode_pairs(tok, ROWS[:4], max_length=128)
    ours = PairCollator(tok.pad_token_id)([pairs])
    assert dropped == 0
    width = ours["input_ids"].shape[1]
    assert torch.equal(theirs["completion_mask"][:, :width].bool(), ours["labels"] != IGNORE)
    real = theirs["attention_mask"][:, :width].bool()
    assert torch.equal(theirs["input_ids"][:, :width][real], ours["input_ids"][real])


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust"])
def test_dpo_matches_trl(tiny, tmp_path, loss_type):
    ref, policy, tok = tiny
    smoothing = 0.1 if loss_type == "robust" else 0.0
    args = _args(trl.DPOConfig, tmp_path, beta=0.2, loss_type=[loss_type], label_smoothing=smoothing)
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_dataset(ROWS), processing_class=tok)
    batch = _trl_batch(trainer, range(4))
    trainer.model.train()
    theirs_loss = trainer.compute_loss(trainer.model, batch)
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    loss_fn = DPOLoss(beta=0.2, loss_type=loss_type, label_smoothing=smoothing)
    loss, ours = loss_fn(PreferenceModule(policy), _ours_from_completion_mask(batch, ref))
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    _close(ours, theirs, PAIR_KEYS)
    assert abs(float(loss) - math.log(2)) > 1e-3 or loss_type != "sigmoid"  # not the trivial value


def test_dpo_lora_reference_is_the_adapter_switched_off(tiny, tmp_path):
    """With LoRA the reference is the same network, adapter disabled: TRL's and ours (cached up front) agree."""
    from peft import LoraConfig

    ref, _, tok = tiny
    args = _args(trl.DPOConfig, tmp_path, beta=0.1)
    trainer = trl.DPOTrainer(
        model=copy.deepcopy(ref),
        args=args,
        train_dataset=_dataset(ROWS),
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a fresh adapter is the identity (B = 0): move it, as training would
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=generator))
    batch = _trl_batch(trainer, range(4))
    trainer.model.train()
    theirs_loss = trainer.compute_loss(trainer.model, batch)
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    pairs, _ = encode_pairs(tok, ROWS[:4], max_length=128)
    collator = PairCollator(tok.pad_token_id)
    reference_logps(trainer.model, [pairs], collator)
    loss, ours = DPOLoss(beta=0.1)(PreferenceModule(trainer.model), collator([pairs]))
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    assert abs(float(loss) - math.log(2)) > 1e-3  # the adapter moved: policy and reference differ
    _close(ours, theirs, PAIR_KEYS)


def test_kto_matches_trl(tiny, tmp_path):
    ref, policy, tok = tiny
    args = _args(trl.KTOConfig, tmp_path, beta=0.2, desirable_weight=1.0, undesirable_weight=1.5)
    trainer = trl.KTOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_dataset(ROWS), processing_class=tok)
    indices = [0, 2, 7, 9]  # two desirable (the chosen block first), two undesirable
    batch = _trl_batch(trainer, indices)
    trainer.model.train()
    theirs_loss = trainer.compute_loss(trainer.model, batch)
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    ours_batch = _ours_from_completion_mask(batch, ref)
    kl_labels = batch["KL_input_ids"].masked_fill(batch["KL_completion_mask"] == 0, IGNORE)
    with torch.no_grad():
        ref_kl = sequence_logps(ref, batch["KL_input_ids"], kl_labels)[0]
    ours_batch.update(
        kl_input_ids=batch["KL_input_ids"], kl_labels=kl_labels, ref_kl_logps=ref_kl, desirable=batch["label"]
    )
    loss, ours = KTOLoss(beta=0.2, desirable_weight=1.0, undesirable_weight=1.5)(PreferenceModule(policy), ours_batch)
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    _close(ours, theirs, ["kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"])
    assert theirs["kl"] > 0  # the reference point is in play, not clamped away

    # Our encoding pairs each prompt with the previous answer in its group, as TRL's dataset does.
    examples, _ = encode_unpaired(tok, unpair(ROWS), max_length=128, kl_group=4)
    ds = trainer.train_dataset
    assert [e.kl_ids for e in examples] == [ds[i]["KL_completion_ids"] for i in range(len(ds))]
    assert [e.desirable for e in examples] == list(ds["label"])


def _ours_from_chosen_rejected(batch, lm_labels: bool):
    """TRL's ORPO/CPO batch (chosen_* and rejected_* tensors) as one batch: chosen rows, then rejected."""
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
    ids = torch.cat([pad(batch["chosen_input_ids"], 0), pad(batch["rejected_input_ids"], 0)])
    labels = torch.cat([pad(batch["chosen_labels"], IGNORE), pad(batch["rejected_labels"], IGNORE)])
    out = {"input_ids": ids, "labels": labels, "num_tokens": 0}
    if lm_labels:
        chosen = pad(batch["chosen_input_ids"], 0).masked_fill(pad(batch["chosen_attention_mask"], 0) == 0, IGNORE)
        out["lm_labels"] = chosen
    return out


def test_orpo_matches_trl(tiny, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    _, policy, tok = tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = ORPOTrainer(
            model=policy, args=_args(ORPOConfig, tmp_path, beta=0.3), train_dataset=_dataset(ROWS), processing_class=tok
        )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs_loss, theirs = trainer.get_batch_loss_metrics(trainer.model, batch)
    # TRL's (and the authors') NLL covers the prompt too: the same loss with nll_on_prompt.
    loss, ours = ORPOLoss(beta=0.3, nll_on_prompt=True)(
        PreferenceModule(policy), _ours_from_chosen_rejected(batch, True)
    )
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    _close(ours, theirs, PAIR_KEYS + ["nll_loss", "log_odds_ratio", "log_odds_chosen"])
    # The default: the same odds-ratio term, with the NLL on the chosen answer's tokens only.
    loss, ours = ORPOLoss(beta=0.3)(PreferenceModule(policy), _ours_from_chosen_rejected(batch, False))
    _close(ours, theirs, ["log_odds_ratio", "log_odds_chosen", "rewards/margins"])
    answer = batch["chosen_labels"][:, 1:]
    with torch.no_grad():
        logits = policy(input_ids=batch["chosen_input_ids"]).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), answer.flatten(), ignore_index=IGNORE)
    assert ours["nll_loss"] == pytest.approx(float(nll), abs=ATOL)
    assert float(loss) == pytest.approx(float(nll) - 0.3 * theirs["log_odds_ratio"], abs=ATOL)


def test_simpo_matches_trl(tiny, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    _, policy, tok = tiny
    args = _args(CPOConfig, tmp_path, loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = CPOTrainer(model=policy, args=args, train_dataset=_dataset(ROWS), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs_loss, theirs = trainer.get_batch_loss_metrics(trainer.model, batch)
    loss, ours = SimPOLoss(beta=2.0, gamma=0.8)(PreferenceModule(policy), _ours_from_chosen_rejected(batch, False))
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    _close(ours, theirs, PAIR_KEYS)


def test_reward_loss_matches_trl(tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    ref, _, tok = tiny
    folder = tmp_path / "backbone"
    ref.save_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    trainer = trl.RewardTrainer(
        model=model, args=_args(trl.RewardConfig, tmp_path), train_dataset=_dataset(ROWS), processing_class=tok
    )
    batch = _trl_batch(trainer, range(4))
    trainer.model.train()
    theirs_loss = trainer.compute_loss(trainer.model, dict(batch))
    theirs = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    loss, ours = reward_loss(trainer.model, {**batch, "num_tokens": 0})
    assert float(loss) == pytest.approx(float(theirs_loss), abs=ATOL)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=ATOL)
    assert ours["margin"] == pytest.approx(theirs["margin"], abs=ATOL)
    assert RewardCollator(tok.pad_token_id)([[([1, 2, 3], [4, 5])]])["attention_mask"].tolist() == [
        [1, 1, 1],
        [1, 1, 0],
    ]


# ---- each method trains a tiny model in the right direction --------------------------------------


def _train(tmp_path, model, items, loss_fn, collator, steps=12, lr=5e-3):
    from odyssey.training import TrainConfig, train

    groups = preference_groups(items, batch_size=4)
    config = TrainConfig(
        output_dir=tmp_path / "run", max_steps=steps, batch_size=1, learning_rate=lr, log_every=1, save_every=None
    )
    return train(PreferenceModule(model), groups, loss_fn, config, collate_fn=collator)


def _margin(model, items, collator) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected), per answer token."""
    batch = collator([items])
    with torch.no_grad():
        sums, counts, _ = sequence_logps(model, batch["input_ids"], batch["labels"])
    avg_c, avg_r = (sums / counts).chunk(2)
    return float((avg_c - avg_r).mean())


@pytest.mark.parametrize(
    "loss_fn", [DPOLoss(beta=0.5), SimPOLoss(beta=2.0, gamma=0.5), ORPOLoss(beta=0.5)], ids=["dpo", "simpo", "orpo"]
)
def test_pairwise_methods_learn_the_preference(tiny, tmp_path, loss_fn):
    ref, _, tok = tiny
    model = copy.deepcopy(ref).train()
    pairs, _ = encode_pairs(tok, ROWS * 2, max_length=128)
    collator = PairCollator(tok.pad_token_id)
    groups = preference_groups(pairs, batch_size=4)
    if isinstance(loss_fn, DPOLoss):
        reference_logps(model, groups, collator)
    before = _margin(model, pairs, collator)
    result = _train(tmp_path, model, pairs, loss_fn, collator)
    losses = [h["loss"] for h in result.history if "loss" in h]
    accuracies = [h["rewards/accuracies"] for h in result.history if "rewards/accuracies" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert sum(accuracies[-3:]) / 3 >= sum(accuracies[:3]) / 3 and accuracies[-1] == 1.0
    assert _margin(model, pairs, collator) > before + 0.5


def test_kto_learns_from_unpaired_answers(tiny, tmp_path):
    ref, _, tok = tiny
    model = copy.deepcopy(ref).train()
    examples, _ = encode_unpaired(tok, unpair(ROWS * 2), max_length=128, kl_group=4)
    collator = UnpairedCollator(tok.pad_token_id)
    groups = preference_groups(examples, batch_size=4)
    reference_logps(model, groups, collator)
    pairs, _ = encode_pairs(tok, ROWS, max_length=128)
    before = _margin(model, pairs, PairCollator(tok.pad_token_id))
    result = _train(tmp_path, model, examples, KTOLoss(beta=0.5), collator)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    margins = [h["rewards/margins"] for h in result.history if "rewards/margins" in h]
    assert margins and margins[-1] > 0
    assert _margin(model, pairs, PairCollator(tok.pad_token_id)) > before + 0.5


def test_reward_model_accuracy_rises(tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from odyssey.training import TrainConfig, train

    ref, _, tok = tiny
    ref.save_pretrained(tmp_path / "backbone")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "backbone", num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    texts = [
        (tok(r["prompt"] + r["chosen"])["input_ids"], tok(r["prompt"] + r["rejected"])["input_ids"]) for r in ROWS * 2
    ]
    groups = [texts[i : i + 4] for i in range(0, len(texts), 4)]
    config = TrainConfig(output_dir=tmp_path / "rm", max_steps=15, batch_size=1, learning_rate=3e-3, log_every=1)
    result = train(model, groups, reward_loss, config, collate_fn=RewardCollator(tok.pad_token_id))
    losses = [h["loss"] for h in result.history if "loss" in h]
    accuracy = [h["accuracy"] for h in result.history if "accuracy" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert accuracy[-1] == 1.0 and sum(accuracy[-3:]) >= sum(accuracy[:3])


def test_prompts_that_fill_max_length_are_dropped_and_answers_cut(tiny):
    _, _, tok = tiny
    long = {"prompt": "word " * 200, "chosen": "yes", "rejected": "no"}
    pairs, dropped = encode_pairs(tok, [long, ROWS[0]], max_length=40)
    assert dropped == 1 and len(pairs) == 1
    pairs, _ = encode_pairs(tok, [{**ROWS[0], "chosen": "very " * 50}], max_length=30)
    assert len(pairs[0].prompt_ids) + len(pairs[0].chosen_ids) == 30
