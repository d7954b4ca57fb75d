"""The candidate: the one thing stages exchange.

A :class:`Candidate` is a model reference plus the prompt configuration that turns an example into
its input, with where it came from (stage, method, parent) and what was recorded about it (its
stored config: training settings, optimization method, artifacts' paths). Every stage starts from
one and records one; ``Project.candidate(...)`` resolves a name, ``best`` or a model reference to it.

:func:`best` is the one rule for "the best candidate" (the board, ``--from best``, ``serve best``,
align's default start all ask it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from odyssey.errors import OdysseyError

if TYPE_CHECKING:
    from odyssey.prompts import PromptConfig
    from odyssey.store import Store

ZERO_SHOT = "zero-shot"


class UnknownCandidate(OdysseyError):
    """A name that is no stored candidate (nor, for ``Project.candidate``, a model reference)."""


@dataclass(frozen=True)
class Candidate:
    """A model reference with its prompt, its lineage and its stored record.

    ``id`` is None for a pseudo-candidate: a model reference evaluated zero-shot with the project's
    default prompt, not (yet) stored; ``Store.ensure`` stores it when a stage needs a parent row."""

    name: str
    model_ref: str
    prompt: PromptConfig | None
    stage: str
    method: str = ""
    id: int | None = None
    parent: str | None = None  # the parent's name
    parent_id: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # what the stage recorded (training, method, artifacts)
    run_id: int | None = None  # the run that created it
    created_at: str | None = None

    @property
    def reference(self) -> str:
        return self.model_ref

    @property
    def stored(self) -> bool:
        return self.id is not None

    @property
    def artifacts(self) -> dict[str, Any]:
        return self.config

    def as_dict(self) -> dict:
        out = asdict(self)
        out["prompt"] = self.prompt.as_dict() if self.prompt is not None else None
        return out


def method_of(stage: str, config: dict, prompt: PromptConfig | None) -> str:
    """How a candidate was made, from its stored config: the stage's own ``method`` (adapt's ``lora``,
    optimize's ``int8``, align's ``dpo``), else its prompt's name (``zero-shot``, ``3-shot-similar``)."""
    section = config.get(stage)
    if isinstance(section, dict) and section.get("method"):
        return str(section["method"])
    if isinstance(config.get("method"), str):
        return config["method"]
    return prompt.name if prompt is not None else ""


def from_row(row: dict, parent_name: str | None, default_prompt: PromptConfig | None) -> Candidate:
    """A stored candidate row as a Candidate; a row stored without a prompt gets the project's default."""
    from odyssey.prompts import PromptConfig

    config = row.get("config") or {}
    stored_prompt = config.get("prompt")
    prompt = PromptConfig.from_dict(stored_prompt) if stored_prompt else default_prompt
    return Candidate(
        name=row["name"],
        model_ref=row["model_ref"],
        prompt=prompt,
        stage=row["stage"],
        method=method_of(row["stage"], config, prompt),
        id=row["id"],
        parent=parent_name,
        parent_id=row.get("parent_id"),
        config=config,
        run_id=row.get("run_id"),
        created_at=row.get("created_at"),
    )


def zero_shot(name: str, model_ref: str, prompt: PromptConfig) -> Candidate:
    """A model reference with the default prompt, not stored: where a stage starts when nothing was kept."""
    return Candidate(
        name=name,
        model_ref=model_ref,
        prompt=prompt,
        stage="select",
        method=ZERO_SHOT,
        config={"prompt": prompt.as_dict()},
    )


def best(
    store: Store,
    split: str = "test",
    metric: str | None = None,
    *,
    gates=None,
    stage: str | None = None,
    exclude_stage: str | None = None,
) -> Candidate | None:
    """THE rule for "the best candidate" (see ``Store.best``, which documents it)."""
    if metric is None:
        raise OdysseyError(
            "Store.best needs a metric to rank by",
            hint="open the store through Project.store (it binds the scope), or pass metric=",
        )
    gates = list(gates or [])
    scored = []
    for row in store.candidates():
        if (stage and row["stage"] != stage) or (exclude_stage and row["stage"] == exclude_stage):
            continue
        metrics = store.latest_metrics(row["id"], split)
        if metrics.get(metric) is None:
            continue
        passes = all(g.passes(metrics.get(g.metric)) is not False for g in gates)  # unmeasured: not failed
        scored.append((row, metrics, passes))
    pool = [s for s in scored if s[2]] or scored
    if not pool:
        return None
    # Highest metric; on a tie, the older candidate (a newer one has to score higher to take the place):
    # rows come in id order and max() keeps the first. Not "fewer parameters": a quantized model's loaded
    # n_params counts its packed int8 weights as buffers, so it would win every tie with its own parent.
    row, _, _ = max(pool, key=lambda s: s[1][metric])
    return store.candidate_obj(row["id"])
