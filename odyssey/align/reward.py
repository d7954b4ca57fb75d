"""The reward model: a sequence-classification head (one scalar) on a small backbone, trained with the
Bradley-Terry pairwise loss -log sigmoid(r(chosen) - r(rejected)) (:func:`odyssey.training.preference.reward_loss`)
on the one loop: its checkpoints, exact resume, progress bar, and with ``eval_every`` the held-out loss
with early stopping and the best weights kept.

Reported: pairwise accuracy on held-out pairs (held out by prompt), a calibration plot (predicted
P(A preferred) = sigmoid(r_A - r_B) against how often A was preferred) with its expected calibration
error. Scores are normalized with the mean and std of the raw scores over the training pairs'
responses, stored beside the weights, so a reward of 0 means "typical for this prompt set".
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError

META_FILE = "odyssey-reward.json"


def scored_text(tokenizer, prompt: str, response: str) -> str:
    """What the reward model reads: the prompt, the answer and the end-of-sequence token (training and scoring)."""
    eos = tokenizer.eos_token or ""
    return prompt + response + (eos if not response.endswith(eos) else "")


def encode_scored(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    """:func:`scored_text` as ids, a long prompt cut at its start (``truncation_side`` left): the answer stays."""
    side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    try:
        return list(
            tokenizer(scored_text(tokenizer, prompt, response), truncation=True, max_length=max_length)["input_ids"]
        )
    finally:
        tokenizer.truncation_side = side


class RewardModel:
    """A trained reward model: ``score(prompts, responses)`` gives normalized rewards."""

    def __init__(self, path: Path, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from odyssey.models.loading import device as default_device

        self.path = Path(path)
        meta_file = self.path / META_FILE
        self.meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        self.device = device or default_device()
        classifier = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=torch.float32)
        self.model = classifier.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.truncation_side = "left"  # keep the response, drop the start of a long prompt
        self.tokenizer.padding_side = "right"
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = int(self.meta.get("max_length", 1024))
        self.mean = float(self.meta.get("mean", 0.0))
        self.std = float(self.meta.get("std", 1.0)) or 1.0

    @classmethod
    def from_store(cls, project, ref: int | str | None = None) -> tuple[RewardModel, dict]:
        from odyssey.store.align import reward_model

        row = reward_model(project.store, ref)
        if row is None:
            raise OdysseyError(
                "no reward model in the store" if ref is None else f"no reward model {ref!r}",
                hint="train one with `odyssey align reward`",
            )
        return cls(Path(row["path"])), row

    def raw(self, prompts: list[str], responses: list[str], batch_size: int = 8) -> list[float]:
        import torch

        texts = [scored_text(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        out: list[float] = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            with torch.inference_mode():
                out += self.model(**enc).logits[:, 0].float().tolist()
        return out

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 8) -> list[float]:
        return [(r - self.mean) / self.std for r in self.raw(prompts, responses, batch_size)]


@dataclass
class RewardResult:
    reward_model_id: int
    name: str
    path: str
    base_ref: str
    preference_set: int
    preference_sha256: str
    metrics: dict[str, float]
    calibration: list[dict] = field(default_factory=list)
    plot: str | None = None
    run_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> float:
    """Fraction of pairs whose chosen response scores higher (ties count half)."""
    if not chosen:
        return float("nan")
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def calibration_bins(chosen: list[float], rejected: list[float], bins: int = 10) -> tuple[list[dict], float]:
    """Reliability of P(A preferred) = sigmoid(r_A - r_B), each pair taken in both orders
    (so the curve is symmetric); returns the bins and the expected calibration error."""
    points = []
    for c, r in zip(chosen, rejected):
        p = 1 / (1 + math.exp(-max(min(c - r, 50), -50)))
        points += [(p, 1.0), (1 - p, 0.0)]
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if not inside:
            continue
        conf = statistics.fmean(p for p, _ in inside)
        freq = statistics.fmean(y for _, y in inside)
        table.append({"lo": lo, "hi": hi, "n": len(inside), "predicted": conf, "observed": freq})
        ece += len(inside) / len(points) * abs(conf - freq)
    return table, ece


def plot_calibration(table: list[dict], accuracy: float, ece: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot([t["predicted"] for t in table], [t["observed"] for t in table], marker="o", label="reward model")
    ax.set_xlabel("predicted P(A preferred) = sigmoid(r_A - r_B)")
    ax.set_ylabel("observed fraction A preferred")
    ax.set_title(f"held-out pairs: accuracy {accuracy:.2f}, ECE {ece:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plain_backbone(project, ref: str, path: Path, out: Path) -> Path:
    """The backbone as a plain checkpoint. An adapt-stage candidate is a LoRA adapter folder:
    ``AutoModelForSequenceClassification`` would load it through transformers' PEFT integration with
    every weight frozen (the Trainer then has nothing to train), so its merge is saved once here."""
    from odyssey.models.loading import ADAPTER_CONFIG

    if not (path / ADAPTER_CONFIG).exists() or (path / "config.json").exists():
        return path
    if (out / "config.json").exists():
        return out
    from odyssey.align.common import load_merged, save_merged

    loaded = load_merged(project, ref)
    tmp = out.with_name(out.name + ".partial")
    save_merged(loaded.model, loaded.tokenizer, tmp)
    tmp.rename(out)  # complete or absent
    return out


def _classifier(base_path: Path, spec):
    """(model, tokenizer): a one-score classification head on the backbone, through LoRA when asked."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(spec.seed)  # the head's initialization
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if spec.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="SEQ_CLS",
            r=spec.lora_r,
            lora_alpha=2 * spec.lora_r,
            target_modules="all-linear",
            lora_dropout=0.0,
        )
        model = get_peft_model(model, lora)  # SEQ_CLS keeps the new head trainable (modules_to_save)
    return model, tok


def _reward_groups(tok, pairs: list[dict], spec) -> list[list]:
    from odyssey.training.preference import RewardPair, preference_groups

    items = [
        RewardPair(
            encode_scored(tok, p["prompt"], p["chosen"], spec.max_length),
            encode_scored(tok, p["prompt"], p["rejected"], spec.max_length),
        )
        for p in pairs
    ]
    return preference_groups(items, spec.micro_batch, spec.seed)


def _held_out_fn(groups: list[list], collator):
    """The Bradley-Terry loss and accuracy on the held-out pairs (``val_loss``, ``val_accuracy``)."""
    from odyssey.training import to_device
    from odyssey.training.preference import reward_loss

    def evaluate(model):
        device = next(model.parameters()).device
        losses, accuracies = [], []
        for group in groups:
            loss, metrics = reward_loss(model, to_device(collator([group]), device))
            losses.append(float(loss))
            accuracies.append(metrics["accuracy"])
        return {"val_loss": sum(losses) / len(losses), "val_accuracy": sum(accuracies) / len(accuracies)}

    return evaluate


def _fit_reward(model, tok, train: list[dict], test: list[dict], spec, work: Path, run, resume: bool):
    """The classifier trained on the loop (TRL's RewardTrainer defaults: linear decay, no warm-up)."""
    from odyssey.align.common import preference_train_config
    from odyssey.training import train as train_loop
    from odyssey.training.preference import RewardCollator, reward_loss

    collator = RewardCollator(tok.pad_token_id)
    # Held-out pairs steer training only when asked (eval_every / early stopping): they are also what the
    # reported accuracy is measured on, which selecting weights on them would flatter.
    steer = bool(spec.eval_every or spec.early_stopping_patience)
    config = preference_train_config(work, spec)

    def log(entry):
        run.log_metrics({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=entry.get("step"))

    return train_loop(
        model,
        _reward_groups(tok, train, spec),
        reward_loss,
        config,
        eval_fn=_held_out_fn(_reward_groups(tok, test, spec), collator) if steer else None,
        collate_fn=collator,
        resume=resume,
        description="reward model",
        on_log=log,
    )


def _save_reward_model(model, tok, out: Path, max_length: int) -> RewardModel:
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / META_FILE).write_text(json.dumps({"max_length": max_length}))
    return RewardModel(out)


def _score_pairs(rm: RewardModel, train: list[dict], test: list[dict]):
    from odyssey import ui

    with ui.status("scoring pairs with the reward model"):
        return [
            rm.raw([p["prompt"] for p in rows], [p[side] for p in rows])
            for rows in (train, test)
            for side in ("chosen", "rejected")
        ]


def train_reward_model(
    project, *, preference_set: int | str | None = None, backbone: str | None = None, resume: bool = False, start=None
) -> RewardResult:
    from odyssey.align.common import quiet_libraries
    from odyssey.align.preferences import load_preference_set
    from odyssey.store.align import save_reward_model

    spec = project.spec.align.reward
    pset = load_preference_set(project, preference_set)  # first: a missing set is a quick, clear error
    train, test = pset.split(spec.held_out, spec.seed)
    if len(train) < 2 or not test:
        raise OdysseyError(
            f"{len(pset.pairs)} preference pairs over too few prompts to hold some out "
            f"({len(train)} train, {len(test)} held out)",
            hint="collect more pairs (`odyssey align prefs`, align.pairs) or lower align.reward.held_out",
        )
    quiet_libraries()
    base_ref, model_ref, base_path = _backbone(project, spec, backbone, start)
    # One folder per (data, backbone, settings): re-running with --resume continues its checkpoints.
    key = hashlib.sha256(f"{pset.sha256}|{base_path}|{spec.model_dump_json()}".encode()).hexdigest()[:10]
    work = project.state_dir / "align" / f"reward-{key}"
    if not resume:
        shutil.rmtree(work / "train", ignore_errors=True)  # a fresh run never continues an old one's checkpoints
    settings = {
        "action": "reward",
        "preference_set": pset.id,
        "preference_sha256": pset.sha256,
        "base": base_ref,
        "train_pairs": len(train),
        "held_out_pairs": len(test),
        "spec": spec.model_dump(),
    }
    with project.store.run("align", project.spec.as_dict(), settings) as run:
        base_path = _plain_backbone(project, model_ref, Path(base_path), work / "backbone")
        model, tok = _classifier(base_path, spec)
        result = _fit_reward(model, tok, train, test, spec, work, run, resume)
        rm = _save_reward_model(model, tok, run.artifacts_dir / "reward-model", spec.max_length)
        metrics, table, mean, std = _measure(rm, train, test)
        meta = {
            "max_length": spec.max_length,
            "mean": mean,
            "std": std,
            "base_ref": base_ref,
            "preference_sha256": pset.sha256,
            "preference_set": pset.id,
            "metrics": metrics,
        }
        (rm.path / META_FILE).write_text(json.dumps(meta, indent=2))
        plot = plot_calibration(
            table, metrics["reward_accuracy"], metrics["reward_ece"], run.artifacts_dir / "reward-calibration.png"
        )
        run.add_artifact(plot, "plot")
        run.add_artifact(rm.path / META_FILE, "reward-model")
        run.log_metrics(metrics)
        name = f"rm-{pset.sha256[:8]}-run{run.id}"
        rm_id = save_reward_model(project.store, name, str(rm.path), base_ref, pset.id, metrics, run.id)
        run.set_summary(
            {
                "reward_model": name,
                "metrics": metrics,
                "calibration": table,
                "history": result.history,
                "steps": result.steps,
                "resumed_from": result.resumed_from,
            }
        )
    return RewardResult(rm_id, name, str(rm.path), base_ref, pset.id, pset.sha256, metrics, table, str(plot), run.id)


def _backbone(project, spec, backbone: str | None, start) -> tuple[str, str, Path]:
    """(the backbone as named, its model reference, its resolved path): ``backbone``, else
    ``align.reward.model``, else the start candidate's model."""
    from odyssey.align.common import starting_candidate
    from odyssey.models import resolve

    start = start or starting_candidate(project)
    base_ref = backbone or spec.model or start.model_ref
    row = project.store.candidate(base_ref)
    model_ref = row["model_ref"] if row else base_ref
    return base_ref, model_ref, resolve(model_ref, project.root)


def _measure(rm: RewardModel, train: list[dict], test: list[dict]) -> tuple[dict, list[dict], float, float]:
    """(held-out metrics, calibration table, mean and std of the training scores, for normalizing)."""
    tr_c, tr_r, te_c, te_r = _score_pairs(rm, train, test)
    everything = tr_c + tr_r
    mean, std = statistics.fmean(everything), (statistics.pstdev(everything) or 1.0)
    table, ece = calibration_bins(te_c, te_r)
    metrics = {
        "reward_accuracy": pairwise_accuracy(te_c, te_r),
        "reward_accuracy_train": pairwise_accuracy(tr_c, tr_r),
        "reward_ece": ece,
        "reward_margin": statistics.fmean(c - r for c, r in zip(te_c, te_r)) / std,
        "train_pairs": len(train),
        "held_out_pairs": len(test),
    }
    return metrics, table, mean, std
