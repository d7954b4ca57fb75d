"""The reward model: a sequence-classification head (one scalar) on a small backbone, trained with the
Bradley-Terry pairwise loss -log sigmoid(r(chosen) - r(rejected)) by TRL's ``RewardTrainer``.

Reported: pairwise accuracy on held-out pairs (held out by prompt), a calibration plot (predicted
P(A preferred) = sigmoid(r_A - r_B) against how often A was preferred) with its expected calibration
error. Scores are normalized with the mean and std of the raw scores over the training pairs'
responses, stored beside the weights, so a reward of 0 means "typical for this prompt set".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError, require

META_FILE = "odyssey-reward.json"


def cpu_training_args() -> dict:
    """TRL 1.x configs default to bf16 and gradient checkpointing; CPUs here have no bf16 units."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not cuda,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 5,
        "dataloader_num_workers": 0,
    }


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

        eos = self.tokenizer.eos_token or ""
        texts = [p + r + (eos if not r.endswith(eos) else "") for p, r in zip(prompts, responses)]
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


def train_reward_model(
    project, *, preference_set: int | str | None = None, backbone: str | None = None, resume: bool = False, start=None
) -> RewardResult:
    from odyssey.align.preferences import load_preference_set

    spec = project.spec.align.reward
    pset = load_preference_set(project, preference_set)  # first: a missing set is a quick, clear error
    train, test = pset.split(spec.held_out, spec.seed)
    if len(train) < 2 or not test:
        raise OdysseyError(
            f"{len(pset.pairs)} preference pairs over too few prompts to hold some out "
            f"({len(train)} train, {len(test)} held out)",
            hint="collect more pairs (`odyssey align prefs`, align.pairs) or lower align.reward.held_out",
        )
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from odyssey import ui
    from odyssey.align.common import quiet_libraries, starting_candidate
    from odyssey.models import resolve
    from odyssey.store.align import save_reward_model

    trl = require("trl", "align", "the reward model")
    RewardConfig, RewardTrainer = trl.RewardConfig, trl.RewardTrainer

    quiet_libraries()
    start = start or starting_candidate(project)
    base_ref = backbone or spec.model or start.model_ref
    row = project.store.candidate(base_ref)
    base_path = resolve(row["model_ref"] if row else base_ref, project.root)
    # One folder per (data, backbone): re-running with --resume continues its checkpoints.
    key = f"{pset.sha256[:10]}-{hashlib.sha256(str(base_path).encode()).hexdigest()[:8]}"
    work = project.state_dir / "align" / f"reward-{key}"
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
        base_path = _plain_backbone(project, row["model_ref"] if row else base_ref, Path(base_path), work / "backbone")
        tok = AutoTokenizer.from_pretrained(base_path)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        peft_config = None
        if spec.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(
                task_type="SEQ_CLS",
                r=spec.lora_r,
                lora_alpha=2 * spec.lora_r,
                target_modules="all-linear",
                lora_dropout=0.0,
            )
        checkpoints = sorted((work / "trainer").glob("checkpoint-*")) if resume else []
        args = RewardConfig(
            output_dir=str(work / "trainer"),
            per_device_train_batch_size=spec.batch_size,
            num_train_epochs=spec.epochs,
            learning_rate=spec.learning_rate,
            max_length=spec.max_length,
            seed=spec.seed,
            disable_tqdm=ui.quiet(),
            **{**cpu_training_args(), "save_strategy": "steps", "save_steps": 50, "save_total_limit": 1},
        )
        data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train])
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config
        )
        with contextlib.redirect_stdout(sys.stderr):  # the HF Trainer prints its log dicts; keep --json clean
            trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        out = run.artifacts_dir / "reward-model"
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / META_FILE).write_text(json.dumps({"max_length": spec.max_length}))
        rm = RewardModel(out)
        with ui.status("scoring pairs with the reward model"):
            tr_c = rm.raw([p["prompt"] for p in train], [p["chosen"] for p in train])
            tr_r = rm.raw([p["prompt"] for p in train], [p["rejected"] for p in train])
            te_c = rm.raw([p["prompt"] for p in test], [p["chosen"] for p in test])
            te_r = rm.raw([p["prompt"] for p in test], [p["rejected"] for p in test])
        everything = tr_c + tr_r
        mean, std = statistics.fmean(everything), (statistics.pstdev(everything) or 1.0)
        meta = {
            "max_length": spec.max_length,
            "mean": mean,
            "std": std,
            "base_ref": base_ref,
            "preference_sha256": pset.sha256,
            "preference_set": pset.id,
        }
        accuracy = pairwise_accuracy(te_c, te_r)
        table, ece = calibration_bins(te_c, te_r)
        metrics = {
            "reward_accuracy": accuracy,
            "reward_accuracy_train": pairwise_accuracy(tr_c, tr_r),
            "reward_ece": ece,
            "reward_margin": statistics.fmean(c - r for c, r in zip(te_c, te_r)) / std,
            "train_pairs": len(train),
            "held_out_pairs": len(test),
        }
        meta["metrics"] = metrics
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        plot = plot_calibration(table, accuracy, ece, run.artifacts_dir / "reward-calibration.png")
        run.add_artifact(plot, "plot")
        run.add_artifact(out / META_FILE, "reward-model")
        run.log_metrics(metrics)
        name = f"rm-{pset.sha256[:8]}-run{run.id}"
        rm_id = save_reward_model(project.store, name, str(out), base_ref, pset.id, metrics, run.id)
        run.set_summary({"reward_model": name, "metrics": metrics, "calibration": table})
    return RewardResult(rm_id, name, str(out), base_ref, pset.id, pset.sha256, metrics, table, str(plot), run.id)
