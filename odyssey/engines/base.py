"""What every engine returns and the small interface stages rely on.

An engine turns rendered prompts (text, exactly as the harness rendered them through the
candidate's tokenizer and chat template) into answers. Prompts are always rendered here, with the
candidate's own Hugging Face tokenizer, whatever runs the model: so every engine sees the same
prompt, and the llama.cpp engine even receives the same token ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ENGINE_NAMES = ("auto", "transformers", "llamacpp", "vllm", "openai")


@dataclass
class Generated:
    text: str
    latency_ms: float
    prompt_tokens: int
    new_tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn / stop string) or "length" (hit max_new_tokens)
    token_ids: list[int] | None = None  # the answer's tokens, where the engine reports them


@dataclass
class EngineInfo:
    """What ``auto`` picked and why, stated in the run's settings and on the console."""

    name: str
    reason: str
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"engine": self.name, "reason": self.reason, **self.details}


class Engine(Protocol):
    """``generate`` returns one answer per prompt (in the caller's order) and run statistics:
    ``wall_s``, ``new_tokens``, ``examples``, ``peak_rss_gb``, ``engine``."""

    name: str
    ref: str
    tokenizer: Any
    family: str
    context_length: int
    info: EngineInfo

    @property
    def n_params(self) -> int | None: ...

    def generate(
        self, prompts: list[str], settings: dict, *, batch_size: int | None = None, description: str = "generating"
    ) -> tuple[list[Generated], dict]: ...

    def close(self) -> None: ...


def encode_prompt(tokenizer, family: str, text: str) -> list[int]:
    """The token ids the transformers engine feeds for ``text``: a chat template already wrote BOS
    and friends into the text of a decoder-only prompt; plain prompts need them added."""
    from odyssey.prompts import has_chat_template

    add_special = not (family == "decoder-only" and has_chat_template(tokenizer))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def stop_strings(settings: dict) -> list[str]:
    stop = settings.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string (engines that already stop there return it unchanged)."""
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def sample_n(engine: Engine, prompts: list[str], settings: dict, n: int, **kwargs) -> list[list[Generated]]:
    """``n`` sampled answers per prompt: each copy gets its own seed, so answers differ where
    sampling allows and the whole set is reproducible."""
    if n <= 1:
        return [[g] for g in engine.generate(prompts, settings, **kwargs)[0]]
    out: list[list[Generated]] = [[] for _ in prompts]
    base_seed = int(settings.get("seed", 0))
    for k in range(n):
        answers, _ = engine.generate(prompts, {**settings, "seed": base_seed + k}, **kwargs)
        for i, g in enumerate(answers):
            out[i].append(g)
    return out


def run_requests(one, items: list, settings: dict, *, workers: int, description: str, order: list[int] | None = None):
    """``one(item, settings)`` for every item on a pool of ``workers`` threads (one request per slot of
    a server engine), with a progress bar; returns the answers in the items' order, the new-token
    total and the wall time."""
    import time
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from odyssey import ui

    results: list[Generated | None] = [None] * len(items)
    new_total, start = 0, time.perf_counter()
    with ui.progress(description, total=len(items)) as bar, ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(one, items[i], settings): i for i in (order or range(len(items)))}
        for future in as_completed(futures):
            results[futures[future]] = g = future.result()
            new_total += g.new_tokens
            bar.advance(1, tok_s=new_total / max(time.perf_counter() - start, 1e-9))
    return [r for r in results if r is not None], new_total, time.perf_counter() - start
