"""``odyssey init``: a new project folder with a complete, commented odyssey.yaml and example data.

The task template (odyssey/templates/<task>.yaml) fills in the scope, the models, the prompt search
and the evaluation. Every other section follows it at its defaults, one comment per setting, written
from the spec itself so it cannot drift from what the loader accepts. Those sections are commented
out: a project keeps getting the defaults of the Odyssey it runs on until it sets a value, and
uncommenting a line (with its section's header) is how it does.
"""

from __future__ import annotations

import re
import shutil
import typing
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel

from odyssey.data import example_data_dir
from odyssey.errors import OdysseyError

# Task -> the example data file shipped for it.
EXAMPLES = {
    "summarization": "summarization/dialogues.jsonl",
    "classification": "classification/tickets.jsonl",
    "qa": "qa/passages.jsonl",
}

# Sections written at their defaults after the task template's own (scope, models, prompt, evaluate).
DEFAULT_SECTIONS = ("select", "adapt", "align", "optimize", "deploy", "augment")
DEFAULTS_BANNER = (
    "# ---- Every other section at its defaults. To change a setting, uncomment its line and the headers above it. ----"
)
COMMENT_COLUMN = 48
NO_COMMENT = "see odyssey/spec.py"

# One-line comments for settings whose spec field carries no description (the spec's own descriptions
# come first). Keys are dotted paths, or bare names that mean the same in every section.
COMMENTS = {
    "seed": "random seed: the same seed gives the same result",
    "learning_rate": "optimizer step size",
    "batch_size": "examples per batch",
    "epochs": "passes over the training data",
    "steps": "optimizer steps",
    "max_length": "longest prompt + answer in tokens (longer ones are cut)",
    "max_new_tokens": "most tokens generated per answer",
    "lora": "train a LoRA adapter instead of every weight",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA scaling numerator (scale = alpha / r)",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "select": "model selection: odyssey select, plan, benchmark, data curate, pretrain",
    "select.split": "split the candidates are compared on",
    "select.curate": "odyssey data curate: dedup, quality filters, PII scrubbing",
    "select.curate.num_perm": "MinHash permutations (more: finer near-duplicate estimates, slower)",
    "select.curate.scrub_pii": "replace e-mails and phone numbers with placeholders",
    "select.curate.max_perplexity": "drop documents above this perplexity (with perplexity_model)",
    "select.pretrain": "odyssey pretrain: a model from scratch",
    "select.pretrain.tokenizer": "tokenizer algorithm trained on the corpus",
    "select.pretrain.vocab_size": "tokenizer vocabulary size",
    "select.pretrain.seq_len": "tokens per training sequence",
    "select.pretrain.eval_every": "steps between validation-loss evaluations",
    "select.benchmarks": "lm-eval tasks odyssey benchmark runs by default",
    "adapt": "fine-tuning: odyssey finetune",
    "adapt.lora": "LoRA adapters (method: lora)",
    "adapt.lora.dropout": "dropout on the adapter's input",
    "adapt.prompt_tuning": "soft prompts (method: prompt_tuning)",
    "adapt.prompt_tuning.num_virtual_tokens": "soft-prompt length in tokens",
    "adapt.method": "full: every weight; lora: low-rank adapters; prompt_tuning: a learned soft prompt",
    "adapt.epochs": "passes over the train split (max_steps overrides it)",
    "adapt.weight_decay": "AdamW weight decay",
    "adapt.grad_accum": "batches whose gradients add up to one optimizer step",
    "adapt.gradient_checkpointing": "recompute activations in the backward pass: less memory, slower",
    "adapt.precision": "training precision (auto: bf16 where the hardware has it, else fp32)",
    "adapt.save_every": "steps between checkpoints (what --resume continues from)",
    "adapt.early_stopping_patience": "stop after this many evaluations without a better validation loss",
    "adapt.mix": "extra datasets mixed in against forgetting: [{source: file.jsonl, weight: 0.2}]",
    "adapt.eval_splits": "splits the new candidate is scored on",
    "align": "preferences, reward model, PPO/RLOO/GRPO, DPO/KTO/ORPO/SimPO: odyssey align",
    "align.preferences": "where preference pairs come from (odyssey align prefs)",
    "align.judge": "the AI judge that ranks pairs (source kind: judge)",
    "align.judge.max_tokens": "tokens the judge may answer with",
    "align.reward": "the Bradley-Terry reward model (odyssey align reward)",
    "align.reward.lora": "train the reward model's backbone through LoRA",
    "align.ppo": "odyssey align ppo (and --algo rloo / grpo)",
    "align.ppo.mini_batch_size": "rollouts per PPO update",
    "align.ppo.ppo_epochs": "passes over each rollout batch",
    "align.ppo.temperature": "sampling temperature of the rollouts",
    "align.ppo.top_k": "sample from the top k tokens (0: all)",
    "align.ppo.clip_range": "PPO's policy-ratio clip",
    "align.ppo.clip_range_value": "clip of the value-function update",
    "align.ppo.vf_coef": "weight of the value loss",
    "align.ppo.gamma": "reward discount per token",
    "align.ppo.lam": "GAE lambda",
    "align.ppo.checkpoint_every": "iterations between checkpoints (what --resume continues from)",
    "align.dpo": "odyssey align dpo",
    "align.dpo.beta": "strength of the pull towards the reference model",
    "align.dpo.loss_type": "sigmoid: DPO; ipo: IPO's squared loss; hinge: SLiC; robust: cDPO (label_smoothing)",
    "align.dpo.lora": "train a LoRA adapter instead of every weight",
    "align.kto": "odyssey align kto: desirable/undesirable answers, no pairs needed",
    "align.orpo": "odyssey align orpo: SFT and preference in one loss, no reference model",
    "align.simpo": "odyssey align simpo: length-normalized reward with a margin, no reference model",
    "align.toxicity": "offensiveness scoring (odyssey align ppo --reward toxicity, align compare)",
    "optimize": "quantization, distillation, pruning: odyssey optimize",
    "optimize.quantize": "odyssey optimize quantize",
    "optimize.distill": "odyssey optimize distill",
    "optimize.distill.steps": "student training steps",
    "optimize.prune": "odyssey optimize prune",
    "optimize.prune.recover_lora_r": "LoRA rank of the recovery fine-tune",
    "optimize.prune.recover_learning_rate": "learning rate of the recovery fine-tune",
    "optimize.prune.recover_batch_size": "batch size of the recovery fine-tune",
    "optimize.measure": "how each optimized candidate is measured beside its parent",
    "optimize.measure.split": "split the task metrics are measured on",
    "deploy": "odyssey serve: the OpenAI-compatible API, the web UI and their limits",
    "deploy.host": "interface to listen on (127.0.0.1: this machine only)",
    "deploy.port": "TCP port",
    "augment": "RAG, chain-of-thought, PAL, ReAct: odyssey rag, reason, augment eval",
    "augment.retrieval": "hybrid: vector and BM25 rankings fused; or one of them alone",
    "augment.strategy": "default reasoning strategy of odyssey reason",
    "augment.sandbox": "limits for model-written Python (PAL, the calculator)",
}


def template(task: str) -> str:
    return (resources.files("odyssey") / "templates" / f"{task}.yaml").read_text(encoding="utf-8")


def default_sections() -> str:
    """Every section in DEFAULT_SECTIONS at the spec's defaults, commented out, one comment per setting."""
    from odyssey.spec import Spec

    lines = [DEFAULTS_BANNER]
    for name in DEFAULT_SECTIONS:
        info = Spec.model_fields[name]
        lines += _section_lines(name, info.annotation, info.get_default(call_default_factory=True), 0, name)
    return "\n".join("# " + line if not line.startswith("#") else line for line in lines) + "\n"


def _section_lines(key: str, model: type[BaseModel], value: BaseModel, indent: int, path: str) -> list[str]:
    lines = [_with_comment(" " * indent + f"{key}:", _comment(path, model.__doc__))]
    for field_name, info in model.model_fields.items():
        sub_path = f"{path}.{field_name}"
        field_value = getattr(value, field_name)
        if isinstance(field_value, BaseModel):
            lines += _section_lines(field_name, type(field_value), field_value, indent + 2, sub_path)
            continue
        if isinstance(field_value, list) and field_value and all(isinstance(v, BaseModel) for v in field_value):
            dumped = [v.model_dump(mode="json", exclude_defaults=True) for v in field_value]  # each item's own settings
        else:
            dumped = value.model_dump(mode="json", include={field_name})[field_name]
        text = " " * (indent + 2) + f"{field_name}: {_flow(dumped)}"
        lines.append(_with_comment(text, _comment(sub_path, info.description, info.annotation)))
    return lines


def _comment(path: str, description: str | None, annotation=None) -> str:
    if path in COMMENTS:
        return COMMENTS[path]
    if description:
        return description.strip().splitlines()[0]
    leaf = path.rsplit(".", 1)[-1]
    if leaf in COMMENTS:
        return COMMENTS[leaf]
    choices = [a for a in typing.get_args(annotation) if isinstance(a, str)] if annotation is not None else []
    if typing.get_origin(annotation) is typing.Literal and choices:
        return "one of " + ", ".join(choices)
    return NO_COMMENT  # tests/test_spec.py fails on it: each setting gets a real comment


def _flow(value) -> str:
    """A value as one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, allow_unicode=True, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _with_comment(text: str, comment: str) -> str:
    pad = max(COMMENT_COLUMN - len(text), 2)
    return f"{text}{' ' * pad}# {comment}"


def init_project(path: str | Path, task: str = "summarization", *, force: bool = False) -> Path:
    if task not in EXAMPLES:
        raise OdysseyError(f"no starter project for task {task!r}", hint=f"tasks with starters: {', '.join(EXAMPLES)}")
    root = Path(path)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.resolve().name).strip("-.") or "project"
    spec_path = root / "odyssey.yaml"
    if spec_path.exists() and not force:
        raise OdysseyError(f"{spec_path} already exists", hint="use --force to overwrite it, or pick another folder")
    (root / "data").mkdir(parents=True, exist_ok=True)
    source = example_data_dir() / EXAMPLES[task]
    shutil.copy2(source, root / "data" / source.name)
    spec_path.write_text(template(task).replace("{name}", name) + "\n" + default_sections(), encoding="utf-8")
    return root
