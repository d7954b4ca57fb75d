"""The transformers engine, the reference: batched ``model.generate`` in PyTorch.

Left padding for decoder-only models, a KV cache, greedy by default. It runs every candidate
Odyssey can load, and it is the only engine that runs soft-prompt (prompt-tuning) candidates and
Odyssey's own int8 runtimes.

Prompts are sorted by length before batching, so a batch wastes little compute on padding,
and results come back in the caller's order. Each example's latency is its batch's wall time:
what a caller waiting for that answer would have seen.
"""

from __future__ import annotations

import time

from odyssey import ui
from odyssey.engines.base import EngineInfo, Generated, cut_at_stop, stop_strings
from odyssey.errors import OdysseyError
from odyssey.models import FAMILY_DECODER, FAMILY_ENCODER, LoadedModel
from odyssey.models.memory import rss_gb
from odyssey.prompts import has_chat_template


def generation_kwargs(settings: dict, tokenizer) -> dict:
    kwargs = {
        "max_new_tokens": int(settings.get("max_new_tokens", 64)),
        "do_sample": bool(settings.get("do_sample", False)),
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }
    if kwargs["do_sample"]:
        kwargs.update(
            temperature=settings.get("temperature", 1.0),
            top_k=settings.get("top_k", 50),
            top_p=settings.get("top_p", 1.0),
        )
    else:  # greedy: neutralize sampling defaults from generation_config so transformers does not warn
        kwargs.update(temperature=None, top_k=None, top_p=None)
    if settings.get("repetition_penalty", 1.0) != 1.0:
        kwargs["repetition_penalty"] = settings["repetition_penalty"]
    stop = [
        t
        for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
        if isinstance(t, int) and t >= 0
    ]
    if stop:
        kwargs["eos_token_id"] = stop
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stop:
        # Padding is never content: a model that would emit it (random or undertrained seq2seq
        # models often do) otherwise yields empty strings that look like real answers.
        kwargs["suppress_tokens"] = [tokenizer.pad_token_id]
    return kwargs


def generate(
    loaded: LoadedModel, prompts: list[str], settings: dict, *, batch_size: int = 8, description: str = "generating"
) -> tuple[list[Generated], dict]:
    """Generate for every prompt; returns the outputs and run statistics (time, tokens, memory)."""
    import torch

    if loaded.family == FAMILY_ENCODER:
        raise OdysseyError(
            f"{loaded.ref} is an encoder-only model ({loaded.model.config.model_type}): it cannot generate text",
            hint="use a decoder-only or encoder-decoder model for this task; encoder-only models suit classification",
        )
    tok = loaded.tokenizer
    decoder_only = loaded.family == FAMILY_DECODER
    tok.padding_side = "left" if decoder_only else "right"  # left: new tokens follow every prompt directly
    if settings.get("do_sample"):
        torch.manual_seed(int(settings.get("seed", 0)))
    kwargs = generation_kwargs(settings, tok)
    stops = stop_strings(settings)
    # A chat template already wrote BOS and friends into the text; plain prompts need them added.
    add_special = not (decoder_only and has_chat_template(tok))
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: list[Generated | None] = [None] * len(prompts)
    start_rss = rss_gb()
    peak_rss, new_total = start_rss, 0
    start = time.perf_counter()
    with ui.progress(description, total=len(prompts)) as bar, torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for i, g in zip(idx, _generate_batch(loaded, [prompts[i] for i in idx], kwargs, add_special, stops)):
                results[i] = Generated(g.text, g.latency_ms, lengths[i], g.new_tokens, g.finish_reason, g.token_ids)
                new_total += g.new_tokens
            peak_rss = max(peak_rss, rss_gb())
            bar.advance(len(idx), tok_s=new_total / max(time.perf_counter() - start, 1e-9))
    wall = time.perf_counter() - start
    stats = {
        "wall_s": wall,
        "new_tokens": new_total,
        "examples": len(prompts),
        # What this candidate needs, not what this process holds: a pipeline's process has trained and
        # evaluated other models before (an int8 candidate read 6.4 GB that way, against llama.cpp's 1.3
        # GB child). So: the weights' bytes plus what generating added on top of them.
        "peak_rss_gb": weight_gb(loaded.model) + max(peak_rss - start_rss, 0.0),
        "batch_size": batch_size,
        "engine": "transformers",
    }
    return [r for r in results if r is not None], stats


def weight_gb(model) -> float:
    """Bytes of the model's tensors (parameters, buffers, and the packed weights of quantized layers, which
    only the state dict lists), in GiB; tied weights counted once."""
    import torch

    seen, total = set(), 0
    stack = list(model.state_dict().values())
    while stack:
        value = stack.pop()
        if isinstance(value, (tuple, list)):  # a quantized Linear's packed (weight, bias)
            stack.extend(value)
        elif torch.is_tensor(value):
            try:
                ptr = value.data_ptr()
            except RuntimeError:  # an opaque (mkldnn-packed) tensor has no data pointer: counted as is
                ptr = id(value)
            if ptr not in seen:
                seen.add(ptr)
                total += value.numel() * value.element_size()
    return total / 1024**3


def _generate_batch(
    loaded: LoadedModel, texts: list[str], kwargs: dict, add_special: bool, stops: list[str]
) -> list[Generated]:
    tok, model = loaded.tokenizer, loaded.model
    decoder_only = loaded.family == FAMILY_DECODER
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    if stops:
        kwargs = {
            **kwargs,
            "stopping_criteria": [_StopInAnswer(tok, batch["input_ids"].shape[1] if decoder_only else 1, stops)],
        }
    t0 = time.perf_counter()
    out = model.generate(**batch, **kwargs)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    new = out[:, batch["input_ids"].shape[1] :] if decoder_only else out[:, 1:]
    eos_ids = kwargs.get("eos_token_id") or []
    answers = []
    for row in range(len(texts)):
        ids = new[row]
        keep = ids[(ids != tok.pad_token_id)] if tok.pad_token_id is not None else ids
        eos = [j for j, t in enumerate(keep.tolist()) if t in eos_ids]
        n_new = eos[0] if eos else len(keep)
        text, stopped = cut_at_stop(tok.decode(keep[:n_new], skip_special_tokens=True), stops)
        finish = "stop" if eos or stopped or n_new < kwargs["max_new_tokens"] else "length"
        answers.append(Generated(text.strip(), elapsed_ms, 0, n_new, finish, keep[:n_new].tolist()))
    return answers


class _StopInAnswer:
    """Stop a row once its *answer* contains a stop string. (transformers' own ``stop_strings``
    also matches across the prompt's last tokens, so a prompt ending in '.' stopped on '...' after
    two generated dots; an OpenAI-style stop looks at the answer alone, as llama.cpp does.)"""

    def __init__(self, tokenizer, start: int, stops: list[str]):
        self.tokenizer, self.start, self.stops = tokenizer, start, stops

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


class TransformersEngine:
    """The reference engine over a loaded model (``odyssey.models.load``)."""

    name = "transformers"

    def __init__(self, loaded: LoadedModel, info: EngineInfo | None = None, batch_size: int = 8):
        self.loaded = loaded
        self.ref = loaded.ref
        self.tokenizer = loaded.tokenizer
        self.family = loaded.family
        self.context_length = loaded.context_length
        self.batch_size = batch_size
        self.info = info or EngineInfo("transformers", "the reference engine")

    @property
    def n_params(self) -> int:
        return self.loaded.n_params

    def generate(
        self, prompts: list[str], settings: dict, *, batch_size: int | None = None, description: str = "generating"
    ) -> tuple[list[Generated], dict]:
        return generate(
            self.loaded, prompts, settings, batch_size=batch_size or self.batch_size, description=description
        )

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
