"""The model behind every technique: an engine from ``odyssey.engines`` (llama.cpp, vLLM, an
OpenAI endpoint or transformers, as ``evaluate.engine`` / ``--engine`` say), with prompts rendered
through the model's chat template (a plain transcript for base models).

Every technique asks for many completions at once (an evaluation set, k self-consistency samples,
one ReAct step for every open question), so the interface is batched: ``complete(list of
message lists) -> list of texts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def render_messages(tokenizer, messages: list[dict]) -> str:
    from odyssey.prompts import has_chat_template

    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        label = {"system": "", "user": "User: ", "assistant": "Assistant: "}[m["role"]]
        parts.append(f"{label}{m['content']}")
    return "\n\n".join(parts) + "\n\nAssistant:"


@dataclass
class ChatModel:
    loaded: object
    settings: dict = field(default_factory=dict)
    batch_size: int = 8

    @classmethod
    def load(
        cls,
        ref: str,
        root=None,
        *,
        max_new_tokens: int = 160,
        batch_size: int = 8,
        engine: str | None = None,
        evaluate=None,
    ) -> ChatModel:
        from odyssey.engines import open_engine

        gen = open_engine(ref, root=root, evaluate=evaluate, engine=engine, batch_size=batch_size)
        return cls(gen, {"max_new_tokens": max_new_tokens, "do_sample": False}, batch_size)

    def close(self) -> None:
        if hasattr(self.loaded, "close"):
            self.loaded.close()

    @property
    def ref(self) -> str:
        return self.loaded.ref

    def budget(self, max_new_tokens: int) -> int:
        return max(int(self.loaded.context_length) - max_new_tokens, 16)

    def fit(self, text: str, max_new_tokens: int) -> str:
        """Keep a prompt within the context window by cutting its oldest tokens (rarely needed)."""
        tok = self.loaded.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        budget = self.budget(max_new_tokens)
        return text if len(ids) <= budget else tok.decode(ids[-budget:])

    def complete(
        self,
        conversations: list[list[dict]],
        *,
        description: str = "generating",
        stop: list[str] | None = None,
        **overrides,
    ) -> list[str]:
        from odyssey.evaluate import as_engine

        if not conversations:
            return []
        settings = {**self.settings, **overrides, **({"stop": list(stop)} if stop else {})}
        prompts = [
            self.fit(render_messages(self.loaded.tokenizer, c), int(settings["max_new_tokens"])) for c in conversations
        ]
        engine = as_engine(self.loaded, self.batch_size)
        outputs, _ = engine.generate(prompts, settings, batch_size=self.batch_size, description=description)
        return [o.text.rstrip() for o in outputs]
