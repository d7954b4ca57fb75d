"""Prompt rendering shared by every stage: instruction + in-context examples + the input,
through the model's chat template when it has one.

A :class:`PromptConfig` is part of a candidate: the prompt stage searches over them, the
harness evaluates with them, fine-tuning trains on the prompts they render, and the server
applies them. Rendering keeps within the context window: in-context examples are dropped
first (furthest first), then the input is truncated, and the caller is told which happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from odyssey.data import Example

DEFAULT_INSTRUCTIONS = {
    "summarization": "Summarize the following dialogue in one or two sentences.",
    "classification": "Classify the message into one of these categories: {labels}. Answer with the category only.",
    "ner": "List the named entities in the text as 'type: entity', one per line.",
    "qa": "Answer the question using only the context. Answer with a short phrase copied from the context.",
    "chat": "You are a helpful assistant.",
    "generation": "Continue the text.",
    "translation": "Translate the text.",
}

INPUT_LABELS = {
    "summarization": ("Dialogue", "Summary"),
    "classification": ("Message", "Category"),
    "qa": ("Question", "Answer"),
    "ner": ("Text", "Entities"),
    "translation": ("Text", "Translation"),
}


@dataclass
class PromptConfig:
    """How a candidate turns an example into model input."""

    task: str
    instruction: str
    shots: int = 0
    selection: str = "fixed"  # fixed | random | similar
    system: str | None = None
    labels: list[str] | None = None
    seed: int = 0
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "zero-shot" if self.shots == 0 else f"{self.shots}-shot-{self.selection}"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def default(cls, task: str, labels: list[str] | None = None, instruction: str | None = None, **kw) -> PromptConfig:
        text = instruction or DEFAULT_INSTRUCTIONS[task]
        return cls(task=task, instruction=text.replace("{labels}", ", ".join(labels or [])), labels=labels, **kw)


@dataclass
class Rendered:
    text: str
    n_tokens: int
    shots_used: int
    truncated_input: bool


def _user_turn(cfg: PromptConfig, ex: Example, with_instruction: bool) -> str:
    in_label, _ = INPUT_LABELS.get(cfg.task, ("Input", "Output"))
    body = ex.input
    if ex.context:
        body = f"Context:\n{ex.context}\n\n{in_label}: {ex.input}"
    else:
        body = f"{in_label}:\n{body}"
    return f"{cfg.instruction}\n\n{body}" if with_instruction else body


def _messages(cfg: PromptConfig, ex: Example, demos: list[Example]) -> list[dict]:
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    for i, demo in enumerate(demos):
        messages.append({"role": "user", "content": _user_turn(cfg, demo, with_instruction=(i == 0))})
        messages.append({"role": "assistant", "content": demo.target})
    messages.append({"role": "user", "content": _user_turn(cfg, ex, with_instruction=not demos)})
    return messages


def _plain(cfg: PromptConfig, ex: Example, demos: list[Example]) -> str:
    """For base models without a chat template: the classic 'Input: ... Output:' few-shot layout."""
    _, out_label = INPUT_LABELS.get(cfg.task, ("Input", "Output"))
    parts = [cfg.system or "", cfg.instruction]
    for demo in demos:
        parts.append(f"{_user_turn(cfg, demo, False)}\n{out_label}: {demo.target}")
    parts.append(f"{_user_turn(cfg, ex, False)}\n{out_label}:")
    return "\n\n".join(p for p in parts if p)


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_text(tokenizer, cfg: PromptConfig, ex: Example, demos: list[Example]) -> str:
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(_messages(cfg, ex, demos), tokenize=False, add_generation_prompt=True)
    return _plain(cfg, ex, demos)


def render(tokenizer, cfg: PromptConfig, ex: Example, demos: list[Example], budget: int) -> Rendered:
    """Render within ``budget`` tokens: drop the furthest demos first, then cut the input's tail."""
    demos = list(demos)
    while True:
        text = render_text(tokenizer, cfg, ex, demos)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n <= budget or not demos:
            break
        demos.pop()  # examples are ordered best first, so the last one matters least
    truncated = False
    if n > budget:
        ids = tokenizer(ex.input, add_special_tokens=False)["input_ids"]
        overflow = n - budget
        keep = max(len(ids) - overflow - 8, 1)
        short = Example(ex.id, tokenizer.decode(ids[:keep]) + " ...", ex.references, ex.context)
        text = render_text(tokenizer, cfg, short, [])
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        truncated = True
    return Rendered(text, n, len(demos), truncated)


class DemoSelector:
    """Picks the in-context examples for each input from a pool (the train split).

    fixed: the first k of the pool, the same for every input; random: k drawn per input with a
    seed derived from the spec's seed and the example id (reproducible); similar: the k nearest
    by MiniLM embedding (cosine), most similar first.
    """

    def __init__(self, pool: list[Example], strategy: str, k: int, seed: int = 0):
        self.pool, self.strategy, self.k, self.seed = list(pool), strategy, k, seed
        self._vectors = None
        if k > len(self.pool):
            raise ValueError(
                f"{k}-shot prompts need at least {k} training examples; the train split has {len(self.pool)}"
            )

    def __call__(self, ex: Example) -> list[Example]:
        if self.k == 0:
            return []
        pool = [p for p in self.pool if p.id != ex.id or p.input != ex.input]
        if self.strategy == "fixed":
            return pool[: self.k]
        if self.strategy == "random":
            import random

            return random.Random(f"{self.seed}:{ex.id}").sample(pool, self.k)
        if self.strategy == "similar":
            from odyssey.models.embeddings import embed

            if self._vectors is None:
                self._vectors = embed([p.input for p in self.pool])
            scores = self._vectors @ embed([ex.input])[0]
            ranked = [self.pool[i] for i in scores.argsort()[::-1]]
            return [p for p in ranked if p.id != ex.id or p.input != ex.input][: self.k]
        raise ValueError(f"unknown example selection {self.strategy!r}")
