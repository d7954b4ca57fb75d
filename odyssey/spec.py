"""The project spec: what ``odyssey.yaml`` may say, as pydantic models.

The scope (task, data, metrics, gates, constraints) comes first; each lifecycle stage has
one section of its own. Every model forbids unknown keys, so a typo is an error with a
did-you-mean rather than a setting silently ignored. Loading with file/line positions and
friendly messages lives in :mod:`odyssey.project`.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TaskType = Literal["summarization", "classification", "ner", "qa", "chat", "generation", "translation"]

# Metrics each task is scored with when the spec names none.
DEFAULT_METRICS: dict[str, list[str]] = {
    "summarization": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "classification": ["accuracy", "f1"],
    "ner": ["exact_match", "f1"],
    "qa": ["exact_match", "f1"],
    "chat": ["rougeL", "bleu"],
    "generation": ["rougeL", "bleu"],
    "translation": ["bleu", "rougeL"],
}

# Quality metrics the harness computes from outputs, and the system metrics it measures.
QUALITY_METRICS = {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1", "accuracy"}
SYSTEM_METRICS = {"p50_latency_ms", "p95_latency_ms", "memory_gb", "examples_per_s", "tokens_per_s"}
KNOWN_METRICS = QUALITY_METRICS | SYSTEM_METRICS | {"toxicity"}

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE_RE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Gate(Strict):
    """An acceptance gate such as ``rougeL >= 0.30``."""

    metric: str
    op: Literal[">=", "<=", ">", "<", "=="]
    threshold: float

    @classmethod
    def parse(cls, metric: str, expression: str | float | int) -> Gate:
        if isinstance(expression, (int, float)) and not isinstance(expression, bool):
            # A bare number: "at least" for quality metrics, "at most" for costs.
            op = "<=" if metric in SYSTEM_METRICS and metric not in {"examples_per_s", "tokens_per_s"} else ">="
            return cls(metric=metric, op=op, threshold=float(expression))
        match = _GATE_RE.match(str(expression))
        if not match:
            raise ValueError(
                f"gate {expression!r} is not of the form '<op> <number>' (op one of >=, <=, >, <, ==), e.g. '>= 0.30'"
            )
        return cls(metric=metric, op=match.group(1), threshold=float(match.group(2)))

    def passes(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return bool(_OPS[self.op](value, self.threshold))

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


class Fields(Strict):
    """Which columns of the data play which role."""

    input: str | list[str] = Field("input", description="column(s) with the model input; several are joined")
    target: str | list[str] | None = Field(
        "target", description="reference column, or several (e.g. [summary1, summary2, summary3])"
    )
    context: str | None = Field(None, description="passage column for QA")
    id: str | None = Field(None, description="example id column; the row number when absent")


class Splits(Strict):
    """Fractions for a deterministic split when the data is one file."""

    train: float = 0.6
    validation: float = 0.2
    test: float = 0.2

    @model_validator(mode="after")
    def _sum_to_one(self) -> Splits:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions add up to {total:g}, not 1 (train + validation + test)")
        for name in ("train", "validation", "test"):
            if getattr(self, name) < 0:
                raise ValueError(f"split fraction {name} is negative")
        return self


class DataSpec(Strict):
    source: str | dict[str, str] = Field(
        ...,
        description="a file (.jsonl/.json/.csv/.tsv/.parquet), 'hf:<dataset id>', or a mapping split -> file",
    )
    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "hf"] = "auto"
    encoding: str = Field("utf-8", description="text encoding of the data files, e.g. latin-1 or cp1252")
    fields: Fields = Fields()
    splits: Splits = Splits()
    seed: int = 0
    hf_config: str | None = None

    @field_validator("source")
    @classmethod
    def _known_split_names(cls, value):
        if isinstance(value, dict):
            unknown = set(value) - {"train", "validation", "test"}
            if unknown:
                raise ValueError(f"unknown split name(s) {sorted(unknown)}; use train, validation, test")
            if not value:
                raise ValueError("the mapping of splits to files is empty")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value):
        import codecs

        try:
            if not codecs.lookup(value)._is_text_encoding:  # e.g. 'base64' is a codec, not a text encoding
                raise LookupError(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; e.g. utf-8, latin-1, cp1252") from None
        return value


class Constraints(Strict):
    memory_gb: float | None = Field(None, gt=0, description="most memory the model may use when serving")
    p95_latency_ms: float | None = Field(None, gt=0)
    hardware: str = Field("auto", description="'auto', 'cpu', 'cuda', or e.g. 'cpu:2,ram:24gb'")
    budget_usd: float | None = Field(None, ge=0)


class Scope(Strict):
    task: TaskType
    description: str = ""
    data: DataSpec
    labels: list[str] | None = Field(None, description="label set for classification")
    metrics: list[str] | None = None
    gates: dict[str, str | float] = Field(default_factory=dict)
    constraints: Constraints = Constraints()

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value):
        for name in value or []:
            if name not in KNOWN_METRICS:
                raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
        return value

    @field_validator("gates")
    @classmethod
    def _parse_gates(cls, value):
        for metric, expression in value.items():
            if metric not in KNOWN_METRICS:
                raise ValueError(f"gate on unknown metric {metric!r}; known: {', '.join(sorted(KNOWN_METRICS))}")
            Gate.parse(metric, expression)
        return value

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics or DEFAULT_METRICS[self.task])

    @property
    def primary_metric(self) -> str:
        """The metric candidates are ranked by: the first gated quality metric, else the first metric."""
        gated = [m for m in self.gates if m in QUALITY_METRICS]
        return gated[0] if gated else self.metric_names[0]

    def gate_list(self) -> list[Gate]:
        gates = [Gate.parse(m, e) for m, e in self.gates.items()]
        named = {g.metric for g in gates}
        # Constraints are gates too: memory_gb and p95_latency_ms from the scope.
        for metric in ("memory_gb", "p95_latency_ms"):
            limit = getattr(self.constraints, metric)
            if limit is not None and metric not in named:
                gates.append(Gate(metric=metric, op="<=", threshold=limit))
        return gates


class ModelEntry(Strict):
    ref: str = Field(..., description="packaged:<name>, a local directory, a .gguf file, tiny:<family> or a hub id")
    name: str | None = None
    revision: str | None = None


class Generation(Strict):
    max_new_tokens: int = Field(64, ge=1, le=8192)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(50, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    seed: int = 0


class PromptSpec(Strict):
    instruction: str | None = Field(None, description="task instruction; a default per task when absent")
    shots: list[Annotated[int, Field(ge=0, le=16)]] = Field(default_factory=lambda: [0, 1, 3])
    selection: list[Literal["fixed", "random", "similar"]] = Field(default_factory=lambda: ["fixed", "similar"])
    system: str | None = None
    limit: int | None = Field(16, ge=1, description="validation examples scored per variant (None: all)")
    test_limit: int | None = Field(None, ge=1)
    generation: Generation = Generation()
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    model: str | None = Field(None, description="model ref to tune prompts for; the first candidate by default")


class LlamaCppEngineSpec(Strict):
    """The llama.cpp engine: the candidate converted to GGUF once, served by a managed llama-server."""

    slots: int = Field(8, ge=1, le=256, description="parallel sequences (llama-server -np)")
    precision: Literal["f32", "f16", "bf16"] = Field(
        "f32", description="GGUF weight type; f32 keeps greedy answers equal to the transformers reference"
    )
    slot_context: int = Field(4096, ge=256, description="tokens of context per slot (prompt + answer)")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")


class OpenAIEngineSpec(Strict):
    """Any OpenAI-compatible endpoint (``odyssey serve`` elsewhere, a vLLM cluster, Ollama)."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable that holds the key")
    model: str | None = Field(None, description="model name at the endpoint (default: the candidate's name)")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(600, gt=0)


class EvaluateSpec(Strict):
    batch_size: int = Field(8, ge=1)
    limit: int | None = Field(None, ge=1)
    generation: Generation = Generation()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    engine: Literal["auto", "transformers", "llamacpp", "vllm", "openai"] = Field(
        "auto", description="what generates: auto picks the fastest engine that runs the candidate exactly"
    )
    llamacpp: LlamaCppEngineSpec = LlamaCppEngineSpec()
    openai: OpenAIEngineSpec = OpenAIEngineSpec()


class CurateSpec(Strict):
    """Data curation for pretraining corpora (``odyssey data curate``)."""

    min_words: int = Field(5, ge=0, description="drop documents with fewer words")
    max_words: int = Field(100_000, ge=1, description="drop documents with more words")
    max_symbol_ratio: float = Field(
        0.1, ge=0, le=1, description="most '#', '...' and non-alphanumeric symbols per word"
    )
    min_alpha_ratio: float = Field(0.7, ge=0, le=1, description="least share of words that contain a letter")
    max_repeated_line_ratio: float = Field(0.3, ge=0, le=1, description="most share of duplicated lines in a document")
    max_top_ngram_ratio: float = Field(0.2, ge=0, le=1, description="most share of characters in the top 2-gram")
    languages: list[str] = Field(default_factory=lambda: ["en"], description="keep these languages ([] keeps all)")
    near_dup_threshold: float = Field(
        0.5, gt=0, le=1, description="MinHash Jaccard above which documents are near-dups"
    )
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(3, ge=1, le=20, description="word n-gram size for MinHash shingles")
    scrub_pii: bool = True
    perplexity_model: str | None = Field(None, description="model ref for an optional perplexity filter")
    max_perplexity: float | None = Field(None, gt=0)


class PretrainSpec(Strict):
    """Pretraining from scratch (``odyssey pretrain``)."""

    objective: Literal["clm", "mlm", "span"] = "clm"
    size: str = Field("tiny", description="a preset: tiny, mini, small, 125m, 350m, 1b")
    corpus: str | None = Field(None, description="text folder or .txt/.jsonl file; the shipped corpus when absent")
    tokenizer: Literal["bpe", "unigram"] = "bpe"
    vocab_size: int = Field(2048, ge=256, le=262_144)
    seq_len: int = Field(128, ge=16, le=8192)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(300, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)
    eval_every: int = Field(50, ge=1)
    seed: int = 0
    init_from: str | None = Field(None, description="model ref for continued pretraining instead of a fresh model")


class SelectSpec(Strict):
    """Model selection: zero-shot comparison of the candidates, planner defaults, benchmarks, pretraining."""

    limit: int | None = Field(8, ge=1, description="examples scored per candidate (None: the whole split)")
    split: Literal["validation", "test"] = "validation"
    batch_size: int = Field(8, ge=1)
    hub_search: str | None = Field(None, description="also list hub models matching this text when online")
    benchmarks: list[str] = Field(default_factory=lambda: ["local:mini-mmlu", "local:boolq-mini"])
    curate: CurateSpec = CurateSpec()
    pretrain: PretrainSpec = PretrainSpec()


class LoraSpec(Strict):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="module names to adapt; None: a per-architecture default (attention + MLP projections)"
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None, description="QLoRA: load the frozen base in 4 or 8 bit (needs a CUDA GPU and bitsandbytes)"
    )


class PromptTuningSpec(Strict):
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    init_text: str | None = Field(
        None,
        description="initialize the soft prompt from this text; None: the task instruction; 'random' for random init",
    )


class MixSource(Strict):
    """An extra dataset mixed into fine-tuning (multi-task mixing against catastrophic forgetting)."""

    source: str = Field(..., description="a .jsonl/.json/.csv/.parquet file with input and target columns")
    fields: Fields = Fields()
    weight: float = Field(1.0, gt=0, description="examples drawn from this source relative to the task's train split")
    instruction: str | None = Field(None, description="the instruction for these examples; None: the task's")


class AdaptSpec(Strict):
    method: Literal["full", "lora", "prompt_tuning"] = "lora"
    model: str | None = Field(None, description="base model ref; default: the prompt stage's model, else the first")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    learning_rate: float | None = Field(None, gt=0, description="None: 3e-5 full, 3e-4 lora, 3e-2 prompt_tuning")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_len: int = Field(512, ge=16, description="prompt + completion tokens per example (longer inputs are cut)")
    batch_tokens: int = Field(2048, ge=16, description="token budget per batch (length-grouped, no padding waste)")
    batch_size: int = Field(16, ge=1, description="most examples per batch")
    grad_accum: int = Field(1, ge=1)
    packing: Literal["bucket", "pack", "pad"] = Field(
        "bucket",
        description="bucket: length-grouped batches; pack: several examples per row with position ids "
        "(no cross-example attention); pad: plain padded batches (for comparison)",
    )
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int | None = Field(None, ge=1, description="steps between validation-loss evaluations")
    val_limit: int | None = Field(32, ge=1, description="validation examples for the validation loss")
    save_every: int | None = Field(50, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    keep_best: bool = Field(True, description="keep the checkpoint with the lowest validation loss and use it")
    seed: int = 0
    lora: LoraSpec = LoraSpec()
    prompt_tuning: PromptTuningSpec = PromptTuningSpec()
    mix: list[MixSource] = Field(default_factory=list)
    general_set: str | None = Field(
        None,
        description="held-aside general data (jsonl with input/target): its loss "
        "before and after fine-tuning shows forgetting",
    )
    eval_splits: list[Literal["validation", "test"]] = Field(default_factory=lambda: ["validation", "test"])


DEFAULT_RUBRIC = (
    "Prefer the response that does the task better: for a summary, the one that states the dialogue's main "
    "facts correctly and concisely, invents nothing and names the speakers as the dialogue does. Between "
    "equally good responses prefer the more polite and harmless one."
)


class PreferenceSource(Strict):
    """Where preference pairs come from (see ``odyssey align prefs``)."""

    kind: Literal["file", "hf", "reference", "outputs", "metric", "judge", "feedback"] = Field(
        ...,
        description="file: JSONL/JSON of prompt/chosen/rejected (HH-style chosen/rejected conversations "
        "accepted); hf: a Hugging Face preference dataset; reference: the task's reference is chosen over a model "
        "sample; outputs: the reference is chosen over answers already stored by earlier runs on the train or "
        "validation split (no sampling); metric: two samples ranked by the task metric against the reference; judge: two samples ranked "
        "by the judge with the rubric; feedback: pairs people made in `odyssey serve` (compare view, thumbs)",
    )
    path: str | None = Field(None, description="file for kind=file (relative to the project)")
    id: str | None = Field(None, description="dataset id for kind=hf")
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="most pairs taken from this source")

    @model_validator(mode="after")
    def _needs(self) -> PreferenceSource:
        if self.kind == "file" and not self.path:
            raise ValueError("a preference source of kind 'file' needs path: <file.jsonl>")
        if self.kind == "hf" and not self.id:
            raise ValueError("a preference source of kind 'hf' needs id: <dataset id>")
        return self


class JudgeSpec(Strict):
    """The AI judge: any OpenAI-compatible endpoint, or a local model/candidate."""

    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible API; none: a local model")
    model: str | None = Field(None, description="model name at the endpoint, or a local model ref / candidate name")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    rubric: str = Field(DEFAULT_RUBRIC, description="the written rubric or constitution the judge applies")
    max_tokens: int = Field(8, ge=1)


class MicroBatched(Strict):
    """``grad_accum``: a step's ``batch_size`` pairs go through the model in this many micro-batches, the
    gradients summed before the one optimizer step: the same step in about 1/grad_accum of the activation
    memory (8 pairs of 640 tokens on DPO: 31 GB by the planner, OOM-killed on 24 GB)."""

    grad_accum: int = Field(
        1, ge=1, description="micro-batches per step (batch_size / grad_accum pairs each): less memory, the same step"
    )

    @model_validator(mode="after")
    def _batch_splits_evenly(self):
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size {self.batch_size} does not split into grad_accum={self.grad_accum} equal micro-batches: "
                "make batch_size a multiple of grad_accum"
            )
        return self

    @property
    def micro_batch(self) -> int:
        """Pairs in one forward pass."""
        return self.batch_size // self.grad_accum


class RewardModelSpec(MicroBatched):
    model: str | None = Field(None, description="backbone; default: the starting candidate's own base model")
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(768, ge=16)
    held_out: float = Field(0.2, gt=0, lt=1, description="fraction of pairs kept out for pairwise accuracy")
    eval_every: int | None = Field(
        None, ge=1, description="steps between held-out losses (early stopping, best weights kept); none: at the end"
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many held-out losses without improvement"
    )
    save_every: int = Field(50, ge=1, description="steps between checkpoints (what --resume continues from)")
    seed: int = 0


class PPOSpec(Strict):
    steps: int = Field(20, ge=1, description="PPO iterations (each: one rollout batch, then ppo_epochs of updates)")
    batch_size: int = Field(8, ge=1, description="prompts per rollout")
    mini_batch_size: int = Field(4, ge=1)
    ppo_epochs: int = Field(2, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    num_generations: int = Field(
        2,
        ge=2,
        description="--algo rloo/grpo: answers sampled per prompt (their group's "
        "rewards are each other's baseline); batch_size must be a multiple of it",
    )
    kl_coef: float = Field(0.05, ge=0, description="initial coefficient of the per-token KL penalty")
    adaptive_kl: bool = Field(True, description="adapt kl_coef towards target_kl (Ziegler et al. 2019)")
    target_kl: float = Field(2.0, gt=0, description="target KL per response (nats) for the adaptive controller")
    kl_bound: float = Field(20.0, gt=0, description="stop when the mean KL per response passes this (reward hacking)")
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, gt=0, le=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    checkpoint_every: int = Field(5, ge=1)
    seed: int = 0


class PreferenceTrainingSpec(MicroBatched):
    """Training settings of the offline preference methods (DPO, KTO, ORPO, SimPO) on the one loop."""

    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(768, ge=16)
    lora: bool = True
    lora_r: int = Field(16, ge=1)
    held_out: float = Field(
        0.0, ge=0, lt=1, description="fraction of the pairs (by prompt) kept out for a validation loss; 0: none"
    )
    eval_every: int | None = Field(
        None, ge=1, description="steps between validation losses (needs held_out); none: at the end only"
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many validation losses without improvement (needs held_out)"
    )
    save_every: int = Field(25, ge=1, description="steps between checkpoints (what --resume continues from)")
    seed: int = 0

    @model_validator(mode="after")
    def _eval_needs_held_out(self):
        if (self.eval_every or self.early_stopping_patience) and not self.held_out:
            raise ValueError(
                "eval_every and early_stopping_patience need held-out pairs to evaluate on: set held_out, e.g. 0.1"
            )
        return self


class DPOSpec(PreferenceTrainingSpec):
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="loss_type robust: the assumed fraction of flipped labels (cDPO)"
    )
    reference_free: bool = Field(False, description="drop the reference model's log-probs (a reference-free DPO)")


class KTOSpec(PreferenceTrainingSpec):
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference model")
    desirable_weight: float = Field(1.0, gt=0, description="weight of the desirable answers' loss")
    undesirable_weight: float = Field(1.0, gt=0, description="weight of the undesirable answers' loss")
    data: Literal["pairs", "feedback", "both"] = Field(
        "pairs",
        description="pairs: each preference pair split into a desirable and an undesirable answer; feedback: "
        "thumbs up/down and ratings people gave in `odyssey serve`; both",
    )


class ORPOSpec(PreferenceTrainingSpec):
    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term beside the NLL (the paper's lambda)")
    nll_on_prompt: bool = Field(
        False,
        description="NLL over the prompt's tokens too (TRL's and the ORPO authors' choice); off: the answer only",
    )


class SimPOSpec(PreferenceTrainingSpec):
    beta: float = Field(2.0, gt=0, description="scale of the length-normalized reward")
    gamma: float = Field(1.0, ge=0, description="target reward margin (the paper keeps gamma / beta near 0.5)")


class ToxicitySpec(Strict):
    classifier: str = Field(
        "profanity-check",
        description="'profanity-check' (offline) or a HF text-classification "
        "model id / folder, e.g. a hate-speech classifier",
    )
    label: str | None = Field(
        None,
        description="for a HF classifier: the label that means offensive (default: the "
        "one named like toxic/offensive/hate)",
    )


class AlignSpec(Strict):
    method: Literal["dpo", "kto", "orpo", "simpo", "ppo", "rloo", "grpo"] = Field(
        "dpo",
        description="how `odyssey run` aligns: dpo, kto, orpo or simpo on the preference pairs; ppo, rloo or grpo "
        "online with the reward model",
    )
    start_from: str | None = Field(
        None,
        description="candidate to align; default: the best fine-tuned (adapt) "
        "candidate, else the best candidate on the board, else the first model",
    )
    preferences: list[PreferenceSource] = Field(
        default_factory=lambda: [
            PreferenceSource(kind="reference"),
            PreferenceSource(kind="metric"),
            PreferenceSource(kind="feedback"),
        ]
    )
    pairs: int = Field(64, ge=2, description="pairs to make from model samples (reference/metric/judge sources)")
    judge: JudgeSpec = JudgeSpec()
    reward: RewardModelSpec = RewardModelSpec()
    ppo: PPOSpec = PPOSpec()
    dpo: DPOSpec = DPOSpec()
    kto: KTOSpec = KTOSpec()
    orpo: ORPOSpec = ORPOSpec()
    simpo: SimPOSpec = SimPOSpec()
    toxicity: ToxicitySpec = ToxicitySpec()
    eval_limit: int | None = Field(None, ge=1, description="test examples for the aligned-vs-parent comparison")


class QuantizeSpec(Strict):
    """``odyssey optimize quantize``: post-training quantization of a candidate."""

    to: list[str] = Field(
        default_factory=lambda: ["int8", "gguf:q8_0", "gguf:q4_k_m"],
        description="int8 (int8 weights + dynamic int8 activations: int8-x86 on x86 CPUs, int8-torchao "
        "elsewhere), int8-x86, int8-torchao, int8-weight-only, "
        "int4 (torchao int4 weight-only), gguf:<type> (llama.cpp: q8_0, q4_k_m, q5_k_m, ...), "
        "bnb-int8 / bnb-nf4 (bitsandbytes, GPU only)",
    )
    int4_group_size: int = Field(32, description="int4 weights share one scale per this many inputs (32, 64, 128)")
    smoothing_alpha: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="int8-x86: SmoothQuant migration strength "
        "(moves activation outliers into the weights); null: no smoothing",
    )
    calibration_examples: int = Field(
        32, ge=1, description="int8-x86 smoothing: train examples whose activations set the per-channel scales"
    )
    gguf_fallback: Literal["llama.cpp", "q4_0", "iq4_nl", "q5_0", "q8_0"] = Field(
        "llama.cpp",
        description="type for tensors whose rows do not fit a k-quant's 256-weight blocks "
        "(e.g. SmolLM2's 576-wide rows): llama.cpp's choice (q5_0 under q4_k_m) or a 32-block type",
    )

    @field_validator("to")
    @classmethod
    def _known_methods(cls, value):
        from odyssey.quant_methods import parse_quant_method  # the one list of methods (stdlib only)

        for method in value:
            try:
                parse_quant_method(method)
            except Exception as exc:  # an OdysseyError: report it as this field's validation error
                raise ValueError(str(exc).replace("\n", " ")) from None
        return value


class DistillSpec(Strict):
    """``odyssey optimize distill``: a smaller student learns the teacher's token distributions."""

    teacher: str = Field("best", description="candidate name, 'best' (the board's best) or a model ref")
    student: str | None = Field(
        None,
        description="a model ref sharing the teacher's tokenizer; default: the teacher "
        "with every other layer kept (student_layers)",
    )
    student_layers: int | None = Field(None, ge=1, description="layers of the derived student; default: half")
    student_init: Literal["every-other", "block-influence"] = Field(
        "every-other",
        description="which teacher layers the derived student keeps: spread evenly (first and last "
        "included), or those that change the hidden state most on train examples (ShortGPT's block influence)",
    )
    temperature: float = Field(2.0, gt=0, description="softens both distributions before the KL")
    alpha: float = Field(0.5, ge=0, le=1, description="loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE")
    positions: Literal["all", "completion"] = Field(
        "all",
        description="where the KL is taken: every token (prompt "
        "included) or only the reference tokens (the CE always uses those)",
    )
    steps: int = Field(100, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    max_length: int = Field(512, ge=32, description="longest prompt + reference in tokens (longer ones are cut)")
    cache_teacher: bool = Field(
        True,
        description="cache the teacher's top-k logits on disk (a second epoch or a "
        "resumed run then needs no teacher forward pass)",
    )
    cache_top_k: int = Field(64, ge=1, le=4096, description="teacher logits kept per token when caching")
    seed: int = 0


class PruneSpec(Strict):
    """``odyssey optimize prune``: remove weights, then optionally recover with a short LoRA fine-tune."""

    structured: bool = Field(
        True,
        description="remove whole MLP neurons / heads / layers (a smaller dense model); "
        "false: zero the smallest weights (unstructured magnitude pruning)",
    )
    sparsity: float = Field(0.25, gt=0, lt=1, description="fraction of the targeted units (or weights) removed")
    target: Literal["mlp", "heads", "layers"] = Field("mlp", description="what structured pruning removes")
    calibration_examples: int = Field(16, ge=1, description="training examples whose activations score importance")
    recover_steps: int = Field(0, ge=0, description="LoRA recovery fine-tune steps after pruning (0: none)")
    recover_lora_r: int = Field(16, ge=1)
    recover_learning_rate: float = Field(2e-4, gt=0)
    recover_batch_size: int = Field(4, ge=1)
    max_length: int = Field(512, ge=32)
    seed: int = 0


class MeasureSpec(Strict):
    """How every optimized candidate (and its parent) is measured."""

    split: Literal["validation", "test"] = "test"
    limit: int | None = Field(None, ge=1, description="examples scored (None: evaluate.limit, else the whole split)")
    batch_size: int | None = Field(None, ge=1, description="generation batch size (None: evaluate.batch_size)")
    speed_prompt_tokens: int = Field(256, ge=8, description="prompt length of the prefill/decode speed test")
    speed_new_tokens: int = Field(32, ge=4, description="tokens decoded in the speed test")
    speed_batch: int = Field(8, ge=2, description="sequences decoded together in the batched speed test")
    paired_rounds: int = Field(
        5,
        ge=0,
        description="rounds of the paired decode test: parent and candidate "
        "loaded in one process and timed alternately, so the machine's drift hits both "
        "alike (0: off)",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch / llama.cpp (None: all cores)")
    isolate: bool = Field(
        True,
        description="measure each model in a fresh process, so its peak memory is its own; "
        "false: in this process (faster start, memory figures include what was loaded before)",
    )


class OptimizeSpec(Strict):
    """Quantization, distillation and pruning of candidates, each measured against its parent."""

    start_from: str = Field("best", description="candidate to optimize: a name, 'best' (the board's), or a model ref")
    quantize: QuantizeSpec = QuantizeSpec()
    distill: DistillSpec = DistillSpec()
    prune: PruneSpec = PruneSpec()
    measure: MeasureSpec = MeasureSpec()


class DeploySpec(Strict):
    """``odyssey serve``: where it listens, which backend runs the model, and the limits every key gets."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    candidate: str = Field("best", description="candidate to serve: a name from `odyssey status`, or 'best'")
    backend: Literal["auto", "transformers", "llama.cpp", "vllm"] = Field(
        "auto", description="auto: llama.cpp for GGUF models when llama-server is available, else transformers"
    )
    parallel: int = Field(8, ge=1, le=256, description="requests decoded together (llama-server slots / batch size)")
    context_length: int | None = Field(None, ge=128, description="total context across slots (llama-server -c)")
    prompt_mode: Literal["task", "chat"] = Field(
        "task",
        description="task: a single user message is rendered through the candidate's prompt (instruction,"
        " examples) as in evaluation; chat: messages go through the chat template unchanged",
    )
    max_request_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    max_prompt_tokens: int = Field(4096, ge=16, description="longest prompt accepted")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none")
    rate_limit_rpm: int = Field(600, ge=1, description="requests per minute per key (keys may set their own)")
    max_concurrency: int = Field(32, ge=1, description="requests in flight per key (keys may set their own)")
    request_timeout_s: float = Field(
        600.0, gt=0, description="longest a generation may run; over it, 504 (or an error event in a stream)"
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: CORS off")
    capture: bool = Field(True, description="record every request, response and feedback in the store")


class SandboxSpec(Strict):
    """Limits for model-written Python (PAL, the ReAct calculator)."""

    timeout_s: float = Field(5.0, gt=0, le=300, description="wall-clock limit; the process group is killed after it")
    cpu_s: int = Field(3, ge=1, le=300, description="CPU-seconds limit (RLIMIT_CPU)")
    memory_mb: int = Field(512, ge=64, description="address-space limit (RLIMIT_AS)")


class AugmentSpec(Strict):
    """RAG, chain-of-thought, PAL and ReAct (``odyssey rag`` / ``odyssey reason`` / ``odyssey augment eval``)."""

    collection: str = Field("docs", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="default collection name")
    documents: str | None = Field(None, description="folder or file ingested when `odyssey rag ingest` gets no path")
    embedder: str = Field(
        "packaged:all-minilm-l6-v2", description="sentence-transformers model: packaged:, path or hub id"
    )
    chunk_size: int = Field(120, ge=16, le=2000, description="most words per chunk")
    chunk_overlap: int = Field(24, ge=0, le=500, description="words of overlap between consecutive chunks of a section")
    top_k: int = Field(4, ge=1, le=50, description="chunks put into the prompt")
    retrieval: Literal["hybrid", "vector", "bm25"] = "hybrid"
    min_similarity: float = Field(
        0.35, ge=-1, le=1, description="below this cosine similarity nothing counts as relevant"
    )
    reranker: str | None = Field(None, description="optional sentence-transformers CrossEncoder (path or hub id)")
    strategy: Literal["plain", "cot", "cot-fewshot", "pal", "react"] = "cot"
    self_consistency: int = Field(1, ge=1, le=32, description="CoT samples to vote over (1: greedy, no voting)")
    temperature: float = Field(0.7, gt=0, description="sampling temperature for self-consistency")
    max_steps: int = Field(5, ge=1, le=20, description="ReAct step limit")
    max_new_tokens: int = Field(160, ge=8, le=4096)
    tools: list[str] = Field(
        default_factory=list, description="extra ReAct tools: 'module:function' or 'file.py:function'"
    )
    sandbox: SandboxSpec = SandboxSpec()


class PipelineStep(Strict):
    """One step of ``odyssey run``: a stage, the candidate it starts from, and overrides of its settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    stage: str = Field(
        ...,
        description="scope, prompt, finetune, align (= preferences, [reward], dpo | ppo), "
        "optimize (= quantize, distill, prune), evaluate; or one sub-stage",
    )
    parent: str | None = Field(
        None,
        description="'best', 'best:STAGE' (the best of the earlier steps of that stage), a candidate "
        "name, a model under models:, or an earlier step's name; none: the stage's default (the step "
        "before it, else the board's best)",
    )
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="step id (default: the stage)")
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="overrides of the stage's spec section, e.g. {method: lora} or {to: int8}",
    )

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, value):
        from odyssey.pipeline.names import check_stage_name  # the one list of stages (stdlib only)

        return check_stage_name(value)


class MlflowTracking(Strict):
    uri: str = Field(
        ...,
        min_length=1,
        description="tracking server (http://127.0.0.1:5000), or a local sqlite:/// "
        "or file: store; an unreachable server stops the command at its start",
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: the project's name")


class TensorBoardTracking(Strict):
    dir: str = Field(".odyssey/tensorboard", description="event files, one folder per run (relative to the project)")


class TrackingSpec(Strict):
    """Where runs are copied as they happen (odyssey.tracking): params, per-step metrics, artifacts, lineage."""

    mlflow: MlflowTracking | None = None
    tensorboard: bool | TensorBoardTracking = Field(False, description="true: event files in .odyssey/tensorboard")


# What `odyssey tune` may search: a name in tune.space -> the setting under adapt: it sets.
TUNE_PARAMS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("learning_rate",),
    "epochs": ("epochs",),
    "max_steps": ("max_steps",),
    "warmup_steps": ("warmup_steps",),
    "weight_decay": ("weight_decay",),
    "lora_r": ("lora", "r"),
    "lora_alpha": ("lora", "alpha"),
    "lora_dropout": ("lora", "dropout"),
    "lora_targets": ("lora", "target_modules"),
    "num_virtual_tokens": ("prompt_tuning", "num_virtual_tokens"),
}
TUNE_SCALES = ("log", "linear", "int")


def tune_dimension(name: str, values: list) -> tuple:
    """A tune.space entry: ``[low, high, log|linear|int]`` is a range, any other list the choices.
    ("range", low, high, scale) or ("choices", values); a ValueError says what is wrong."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"tune.space.{name} needs a list: choices such as [4, 8, 16], or a range [low, high, log]")
    if len(values) == 3 and values[2] in TUNE_SCALES:
        low, high, scale = values
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or low >= high or (scale == "log" and low <= 0):
            raise ValueError(f"tune.space.{name}: the range {values} needs numbers low < high (and low > 0 for log)")
        return ("range", low, high, scale)
    return ("choices", list(values))


class TuneSpec(Strict):
    """``odyssey tune``: an Optuna search over fine-tuning settings (odyssey.tune)."""

    trials: int = Field(20, ge=1, description="trials in the study, counting those an interrupted search finished")
    method: Literal["full", "lora", "prompt_tuning"] | None = Field(None, description="default: adapt.method")
    space: dict[str, list[Any]] = Field(
        default_factory=lambda: {"learning_rate": [1e-5, 1e-2, "log"], "lora_r": [4, 8, 16]},
        description="setting -> choices [4, 8, 16] or a range [low, high, log|linear|int]; settings: "
        + ", ".join(TUNE_PARAMS),
    )
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="grid: every combination of choices, in turn")
    seed: int = 0
    prune: bool = Field(True, description="stop a trial whose validation loss is worse than the median trial's")
    prune_startup_trials: int = Field(2, ge=0, description="trials that always run to the end before any is pruned")
    eval_every: int | None = Field(
        None,
        ge=1,
        description="steps between validation-loss checks in a trial (what "
        "pruning looks at); default: adapt.eval_every, else only at the end",
    )
    study: str | None = Field(
        None, description="the study's name in .odyssey/tune/optuna.db; default: <model>-<method>"
    )

    @field_validator("space")
    @classmethod
    def _known_settings(cls, value):
        import difflib

        if not value:
            raise ValueError("the search space is empty: nothing to tune")
        for name, values in value.items():
            if name not in TUNE_PARAMS:
                close = difflib.get_close_matches(name, list(TUNE_PARAMS), n=1)
                raise ValueError(
                    f"tune.space: {name!r} is not a setting tune can search"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" (settings: {', '.join(TUNE_PARAMS)})"
                )
            tune_dimension(name, values)
        return value


class Spec(Strict):
    """The whole ``odyssey.yaml``."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(1, description="spec format version")
    scope: Scope
    models: list[str | ModelEntry] = Field(default_factory=list)
    prompt: PromptSpec = PromptSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    select: SelectSpec = SelectSpec()
    adapt: AdaptSpec = AdaptSpec()
    align: AlignSpec = AlignSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    deploy: DeploySpec = DeploySpec()
    augment: AugmentSpec = AugmentSpec()
    tracking: TrackingSpec = TrackingSpec()
    tune: TuneSpec = TuneSpec()
    allow_pickle: bool = Field(
        False,
        description="load pickle checkpoints (.bin/.pt that weights_only refuses): they can run code; only "
        "for files whose origin you trust",
    )
    pipeline: list[PipelineStep] | None = Field(
        None,
        description="the steps `odyssey run` executes, in order; none: scope, prompt, finetune, align, "
        "optimize, evaluate",
    )
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="`odyssey run --profile NAME`: spec overrides by name (beside the built-in "
        "demo, quick and full, or replacing one)",
    )

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value):
        if value != 1:
            raise ValueError(f"spec version {value} is not supported by this Odyssey (supports 1)")
        return value

    def model_entries(self) -> list[ModelEntry]:
        return [ModelEntry(ref=m) if isinstance(m, str) else m for m in self.models]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
