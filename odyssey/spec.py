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
    def parse(cls, metric: str, expression: str | float | int) -> "Gate":
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
    def _sum_to_one(self) -> "Splits":
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
        description="a file (.jsonl/.json/.csv/.parquet), 'hf:<dataset id>', or a mapping split -> file",
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "hf"] = "auto"
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


class EvaluateSpec(Strict):
    batch_size: int = Field(8, ge=1)
    limit: int | None = Field(None, ge=1)
    generation: Generation = Generation()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class AdaptSpec(Strict):
    method: Literal["full", "lora", "prompt_tuning"] = "lora"


class AlignSpec(Strict):
    method: Literal["dpo", "ppo", "rloo", "grpo"] = "dpo"


class OptimizeSpec(Strict):
    methods: list[str] = Field(default_factory=list)


class DeploySpec(Strict):
    """``odyssey serve``: where it listens, which backend runs the model, and the limits every key gets."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    candidate: str = Field("best", description="candidate to serve: a name from `odyssey status`, or 'best'")
    backend: Literal["auto", "transformers", "llama.cpp", "vllm"] = Field(
        "auto", description="auto: llama.cpp for GGUF models when llama-server is available, else transformers")
    parallel: int = Field(8, ge=1, le=256, description="requests decoded together (llama-server slots / batch size)")
    context_length: int | None = Field(None, ge=128, description="total context across slots (llama-server -c)")
    prompt_mode: Literal["task", "chat"] = Field(
        "task", description="task: a single user message is rendered through the candidate's prompt (instruction,"
        " examples) as in evaluation; chat: messages go through the chat template unchanged")
    max_request_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    max_prompt_tokens: int = Field(4096, ge=16, description="longest prompt accepted")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none")
    rate_limit_rpm: int = Field(600, ge=1, description="requests per minute per key (keys may set their own)")
    max_concurrency: int = Field(32, ge=1, description="requests in flight per key (keys may set their own)")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: CORS off")
    capture: bool = Field(True, description="record every request, response and feedback in the store")


class AugmentSpec(Strict):
    collections: list[str] = Field(default_factory=list)


class Spec(Strict):
    """The whole ``odyssey.yaml``."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(1, description="spec format version")
    scope: Scope
    models: list[str | ModelEntry] = Field(default_factory=list)
    prompt: PromptSpec = PromptSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    adapt: AdaptSpec = AdaptSpec()
    align: AlignSpec = AlignSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    deploy: DeploySpec = DeploySpec()
    augment: AugmentSpec = AugmentSpec()

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
