"""Pieces every align method shares: which candidate to start from, the prompts it sees, saving an
aligned model as a candidate, and the bootstrap confidence interval used to report changes."""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError
from odyssey.prompts import DemoSelector, PromptConfig, render
from odyssey.store.candidates import Candidate


@dataclass
class AlignResult:
    """What an align run made: the new candidate, its parent, the training history and the comparison."""

    candidate: str
    candidate_id: int
    parent: str
    method: str
    model_path: str
    run_id: int
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Start:
    """The candidate an align run starts from (its parent), and a note on why that one."""

    candidate: Candidate
    note: str = ""

    name = property(lambda self: self.candidate.name)
    model_ref = property(lambda self: self.candidate.model_ref)
    prompt = property(lambda self: self.candidate.prompt)
    id = property(lambda self: self.candidate.id)
    stage = property(lambda self: self.candidate.stage)

    def as_dict(self) -> dict:
        return {"name": self.name, "model_ref": self.model_ref, "id": self.id, "stage": self.stage, "note": self.note}


def starting_candidate(project, name: str | Candidate | None = None) -> Start:
    """The named candidate (a name, ``best`` or a model reference, through ``Project.candidate``); else
    the best fine-tuned one; else the best of the others not aligned already; else the project's first
    model with the default prompt (and a note saying so)."""
    from odyssey.store.candidates import UnknownCandidate

    name = name or project.spec.align.start_from
    if name:
        try:
            return Start(project.candidate(name))
        except UnknownCandidate as exc:
            raise OdysseyError(f"{exc.message} to align", hint=exc.hint) from None
    # Align prefers a fine-tuned parent (alignment polishes a model that already does the task), so it
    # asks the one rule for "best" (Store.best) among the adapt candidates first, then among all but
    # the aligned ones (an aligned model is aligned again only when named).
    store = project.store
    best = store.best(stage="adapt")
    if best is not None:
        return Start(best)
    best = store.best(exclude_stage="align")
    if best is not None:
        return Start(best, "no fine-tuned (adapt) candidate scored yet: starting from the best prompt/base candidate")
    return Start(
        project.candidate(project.default_model()),
        "no candidate scored yet: starting from the first model with the default prompt",
    )


def ensure_candidate_row(project, start: Start) -> int:
    """Aligned candidates link to a parent row; a base model used as the start gets one."""
    start.candidate = project.store.ensure(start.candidate)
    return start.id


def render_prompts(loaded, cfg: PromptConfig, examples, pool=None, max_new_tokens: int = 64) -> list[str]:
    """The exact model input each example becomes for this candidate (the one prompt path)."""
    budget = loaded.context_length - max_new_tokens
    if cfg.shots:
        selector = DemoSelector(pool or [], cfg.selection, cfg.shots, cfg.seed)
    else:
        selector = DemoSelector([], "fixed", 0)
    return [render(loaded.tokenizer, cfg, ex, selector(ex), budget).text for ex in examples]


def chat_prompt(tokenizer, text: str, system: str | None = None) -> str:
    """A free-form user message as model input (the detox prompts): the chat template when there is one."""
    from odyssey.prompts import has_chat_template

    if has_chat_template(tokenizer):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system + chr(10) if system else ''}User: {text}\nAssistant:"


def bootstrap_ci(
    before: list[float], after: list[float], *, paired: bool = True, n: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(after) - mean(before). Paired resamples the same indices for both
    (the same prompts before and after); unpaired resamples each group on its own."""
    if not before or not after:
        raise ValueError("bootstrap needs values before and after")
    if paired and len(before) != len(after):
        raise ValueError("paired bootstrap needs as many values after as before")
    rng = random.Random(seed)
    diffs = []
    for _ in range(n):
        if paired:
            idx = [rng.randrange(len(before)) for _ in before]
            diffs.append(statistics.fmean(after[i] for i in idx) - statistics.fmean(before[i] for i in idx))
        else:
            b = [before[rng.randrange(len(before))] for _ in before]
            a = [after[rng.randrange(len(after))] for _ in after]
            diffs.append(statistics.fmean(a) - statistics.fmean(b))
    diffs.sort()
    lo = diffs[int((1 - level) / 2 * n)]
    hi = diffs[min(int((1 + level) / 2 * n), n - 1)]
    return lo, hi


def response_mask(response, stop_ids: set):
    """1.0 for every generated token up to and including the first stop token, 0.0 after it (padding)."""
    import torch

    is_stop = torch.zeros_like(response, dtype=torch.bool)
    for s in stop_ids:
        is_stop |= response == s
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0
    return (~after_stop).float()


def distinct_ngrams(texts: list[str], n: int = 2) -> float:
    """Corpus-level distinct-n (Li et al., 2016): distinct word n-grams over all n-grams of all texts.

    Written here because it is four lines; the libraries that have it (e.g. torchmetrics' text
    metrics or nlg-eval) would be a heavy dependency for a count. A policy that found one phrase the
    reward likes (reward hacking) answers every prompt with it, and its distinct-2 falls."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.lower().split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def load_merged(project, ref: str):
    """A model loaded in fp32 with a LoRA adapter (an adapt-stage candidate) merged into its base."""
    from odyssey.models import load

    loaded = load(ref, root=project.root, dtype="float32")
    if hasattr(loaded.model, "merge_and_unload"):
        loaded.model = loaded.model.merge_and_unload()
    return loaded


def load_trainable_start(project, begin):
    """The starting candidate loaded for training, merged (``load_merged``): PPO, DPO and TRL's
    trainers put their own adapter on top, and TRL refuses a PeftModel together with a peft_config."""
    return load_merged(project, begin.model_ref)


def save_merged(model, tokenizer, out: Path) -> Path:
    """Save a (possibly LoRA-wrapped) causal LM as a plain safetensors checkpoint any stage can load."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def quiet_libraries():
    """With ODYSSEY_QUIET, silence datasets' progress bars and transformers' load reports too."""
    from odyssey import ui

    if ui.quiet():
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.set_verbosity_error()


def trl_cpu_args() -> dict:
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


def preference_train_config(work: Path, cfg):
    """The loop's settings for a preference run (DPO, KTO, ORPO, SimPO, the reward model) from its spec
    section: TRL's defaults for these trainers (linear decay, no warm-up), so the move kept the recipe."""
    from odyssey.training import TrainConfig

    return TrainConfig(
        output_dir=work / "train",
        epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        batch_size=1,  # one item is one length-bucketed group of cfg.micro_batch pairs
        grad_accum=cfg.grad_accum,
        lr_scheduler="linear",
        seed=cfg.seed,
        log_every=1,
        save_every=cfg.save_every,
        eval_every=cfg.eval_every,
        early_stopping_patience=cfg.early_stopping_patience,
    )
