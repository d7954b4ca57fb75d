"""Batched generation: left padding for decoder-only models, a KV cache, greedy by default.

Prompts are sorted by length before batching, so a batch wastes little compute on padding,
and results come back in the caller's order. Each example's latency is its batch's wall time:
what a caller waiting for that answer would have seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from odyssey.models import FAMILY_DECODER, FAMILY_ENCODER, LoadedModel
from odyssey.errors import OdysseyError
from odyssey import ui
from odyssey.prompts import has_chat_template
from odyssey.models.memory import rss_gb  # noqa: F401  (one implementation; re-exported here)


@dataclass
class Generated:
    text: str
    latency_ms: float
    prompt_tokens: int
    new_tokens: int


def generation_kwargs(settings: dict, tokenizer) -> dict:
    kwargs = {
        "max_new_tokens": int(settings.get("max_new_tokens", 64)),
        "do_sample": bool(settings.get("do_sample", False)),
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }
    if kwargs["do_sample"]:
        kwargs.update(temperature=settings.get("temperature", 1.0), top_k=settings.get("top_k", 50),
                      top_p=settings.get("top_p", 1.0))
    else:  # greedy: neutralize sampling defaults from generation_config so transformers does not warn
        kwargs.update(temperature=None, top_k=None, top_p=None)
    if settings.get("repetition_penalty", 1.0) != 1.0:
        kwargs["repetition_penalty"] = settings["repetition_penalty"]
    stop = [t for t in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int) and t >= 0]
    if stop:
        kwargs["eos_token_id"] = stop
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stop:
        # Padding is never content: a model that would emit it (random or undertrained seq2seq
        # models often do) otherwise yields empty strings that look like real answers.
        kwargs["suppress_tokens"] = [tokenizer.pad_token_id]
    return kwargs


def generate(loaded: LoadedModel, prompts: list[str], settings: dict, *, batch_size: int = 8,
             description: str = "generating") -> tuple[list[Generated], dict]:
    """Generate for every prompt; returns the outputs and run statistics (time, tokens, memory)."""
    import torch

    if loaded.family == FAMILY_ENCODER:
        raise OdysseyError(
            f"{loaded.ref} is an encoder-only model ({loaded.model.config.model_type}): it cannot generate text",
            hint="use a decoder-only or encoder-decoder model for this task; encoder-only models suit classification",
        )
    tok, model = loaded.tokenizer, loaded.model
    decoder_only = loaded.family == FAMILY_DECODER
    tok.padding_side = "left" if decoder_only else "right"  # left: new tokens follow every prompt directly
    if settings.get("do_sample"):
        torch.manual_seed(int(settings.get("seed", 0)))
    kwargs = generation_kwargs(settings, tok)
    # A chat template already wrote BOS and friends into the text; plain prompts need them added.
    add_special = not (decoder_only and has_chat_template(tok))
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    results: list[Generated | None] = [None] * len(prompts)
    peak_rss, new_total = rss_gb(), 0
    start = time.perf_counter()
    with ui.progress(description, total=len(prompts)) as bar, torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            batch = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            t0 = time.perf_counter()
            out = model.generate(**batch, **kwargs)
            elapsed_ms = (time.perf_counter() - t0) * 1000
            new = out[:, batch["input_ids"].shape[1]:] if decoder_only else out[:, 1:]
            for row, i in enumerate(idx):
                ids = new[row]
                keep = ids[(ids != tok.pad_token_id)] if tok.pad_token_id is not None else ids
                eos = [j for j, t in enumerate(keep.tolist()) if t in (kwargs.get("eos_token_id") or [])]
                n_new = eos[0] if eos else len(keep)
                text = tok.decode(keep[:n_new], skip_special_tokens=True).strip()
                results[i] = Generated(text, elapsed_ms, lengths[i], n_new)
                new_total += n_new
            peak_rss = max(peak_rss, rss_gb())
            bar.advance(len(idx), tok_s=new_total / max(time.perf_counter() - start, 1e-9))
    wall = time.perf_counter() - start
    stats = {"wall_s": wall, "new_tokens": new_total, "examples": len(prompts), "peak_rss_gb": peak_rss,
             "batch_size": batch_size}
    return [r for r in results if r is not None], stats
