"""One measurement harness for every optimized candidate and its parent.

Each model is measured in a fresh Python process (``python -m odyssey.optimize.measure``), so
its peak resident memory is its own and not the leftovers of whatever the caller loaded before.
The child reports:

- ``size_mb``: the weights on disk (safetensors / GGUF);
- ``load_rss_gb`` (resident memory once loaded) and ``peak_rss_gb`` (the process's peak, during
  generation), with ``base_rss_gb``: the same process before the model was loaded;
- ``prefill_tok_s``: a ``speed_prompt_tokens`` prompt built from the scope's data, processed in
  one forward pass; ``decode_tok_s``: then ``speed_new_tokens`` tokens decoded one at a time with
  the KV cache (single stream); ``decode_tok_s_batched``: the same with ``speed_batch`` sequences
  at once (transformers only: llama-cpp-python's API decodes one sequence; llama-server's slots
  batch, which the deploy stage measures);
- the task metrics and p50/p95 latency over the evaluation examples, through the shared harness
  (``odyssey.evaluate.run_harness``) for transformers models, and through llama.cpp with the same
  rendered prompts for GGUF files. Latency is the wall time a caller waits: the batch's time for
  batched transformers generation (``evaluate.batch_size``), one request's time for llama.cpp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from odyssey.errors import OdysseyError

QUALITY_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "f1", "accuracy")


def _rss_gb() -> float:
    from odyssey.models.memory import rss_gb

    return rss_gb()


def _peak_rss_gb() -> float:
    from odyssey.models.memory import peak_rss_gb

    return peak_rss_gb()


# ---- parent side -----------------------------------------------------------------------------


def settings_for(project, split: str | None = None, limit: int | None = None) -> dict:
    m = project.spec.optimize.measure
    ev = project.spec.evaluate
    return {
        "split": split or m.split,
        "limit": limit or m.limit or ev.limit,
        "batch_size": m.batch_size or ev.batch_size,
        "speed_prompt_tokens": m.speed_prompt_tokens,
        "speed_new_tokens": m.speed_new_tokens,
        "speed_batch": m.speed_batch,
        "paired_rounds": m.paired_rounds,
        "threads": m.threads,
        "isolate": m.isolate,
    }


def measure_model(
    project,
    model_ref: str,
    prompt_cfg,
    *,
    tokenizer_path: str | None = None,
    settings: dict | None = None,
    label: str = "",
) -> dict:
    """Measure one model in a child process; returns the measurement dict (see the module doc)."""
    settings = settings or settings_for(project)
    request = {
        "kind": "model",
        "project": str(project.root),
        "model_ref": str(model_ref),
        "prompt": prompt_cfg.as_dict(),
        "tokenizer_path": tokenizer_path,
        "settings": settings,
    }
    return _run(project, request, f"measuring {label or model_ref}", "(size, memory, speed, quality)")


def measure_paired(
    project,
    parent_ref: str,
    child_ref: str,
    prompt_cfg,
    *,
    tokenizer_path: str | None = None,
    settings: dict | None = None,
    label: str = "",
) -> dict | None:
    """Decode speed of a candidate against its parent, both loaded in one process and timed in
    alternating rounds (parent first in even rounds, candidate first in odd ones).

    Why beside the per-model figures: each of those comes from its own process, minutes apart (the
    quality run sits between them), or from a parent measured earlier and reused; this machine's
    decode speed drifts by 10-20 % within an hour, which moves a ratio of two such figures as much
    as the optimization does. Here drift hits both models alike, and the ratio reported is the
    median of the per-round ratios. ``tokenizer_path`` is the candidate's (GGUF files)."""
    settings = settings or settings_for(project)
    if not settings.get("paired_rounds"):
        return None
    request = {
        "kind": "paired",
        "project": str(project.root),
        "parent_ref": str(parent_ref),
        "model_ref": str(child_ref),
        "prompt": prompt_cfg.as_dict(),
        "tokenizer_path": tokenizer_path,
        "settings": settings,
    }
    return _run(
        project,
        request,
        f"timing {label or child_ref} against its parent",
        f"({settings['paired_rounds']} alternating rounds)",
    )


def _run(project, request: dict, what: str, detail: str) -> dict:
    """Run one request in a fresh process (or here, with ``isolate: false``)."""
    from odyssey import ui

    settings = request["settings"]
    if not settings.get("isolate", True):
        with ui.status(f"{what} in this process"):
            return _handle(project, request)
    with tempfile.TemporaryDirectory(prefix="odyssey-measure-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request, default=str))
        env = dict(os.environ)
        if settings.get("threads"):
            env["OMP_NUM_THREADS"] = str(settings["threads"])
        with ui.status(f"{what} {detail}"):
            proc = subprocess.run(
                [sys.executable, "-m", "odyssey.optimize.measure", str(req), str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            raise OdysseyError(
                f"{what} failed:\n" + "\n".join(tail),
                hint="run `odyssey eval --candidate NAME` on it to see the error in full",
            )
        return json.loads(out.read_text())


def compare(child: dict, parent: dict, paired: dict | None = None) -> dict:
    """Ratios and differences of a child measurement against its parent's; with ``paired`` (from
    :func:`measure_paired`), also the decode speed-up timed in one process."""

    def ratio(key, invert=False):
        a, b = child.get(key), parent.get(key)
        if not a or not b:
            return None
        return (b / a) if invert else (a / b)

    out = {
        "size_ratio": ratio("size_mb"),
        "prefill_speedup": ratio("prefill_tok_s"),
        "decode_speedup": ratio("decode_tok_s"),
        "decode_batched_speedup": ratio("decode_tok_s_batched"),
        "p95_latency_ratio": ratio("p95_latency_ms"),
        "peak_rss_ratio": ratio("peak_rss_gb"),
    }
    if paired:
        out["decode_speedup_paired"] = paired["decode_speedup"]
        out["paired_speed"] = paired
    for key in QUALITY_KEYS:
        if key in child.get("metrics", {}) and key in parent.get("metrics", {}):
            out[f"{key}_change"] = child["metrics"][key] - parent["metrics"][key]
    return out


# ---- child side ------------------------------------------------------------------------------


def _speed_ids(tokenize, texts: list[str], n_tokens: int) -> list[int]:
    """A real prompt from the data, tiled/cut to exactly ``n_tokens`` tokens (``tokenize``: text -> ids)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenize(text)
        if len(ids) >= n_tokens:
            break
    while len(ids) < n_tokens:
        ids = ids + ids
    return ids[:n_tokens]


def _fastest(run) -> tuple[float, float]:
    """One warm-up call of ``run`` (first-call allocations, lazy kernel selection), then the faster of
    two, by prefill + decode seconds."""
    run()
    return min((run() for _ in range(2)), key=lambda r: r[0] + r[1])


def _timed_load(load_fn) -> tuple[object, dict]:
    """``load_fn()``'s result and the load's figures: RSS before and after, and seconds."""
    base = _rss_gb()
    t0 = time.perf_counter()
    obj = load_fn()
    return obj, {"base_rss_gb": base, "load_s": time.perf_counter() - t0, "load_rss_gb": _rss_gb()}


def _torch_runner(model, ids: list[int], new_tokens: int):
    """``run(b)``: prefill ``b`` copies of the prompt in one forward, then greedy cached decoding of
    ``new_tokens`` tokens; returns (prefill seconds, decode seconds)."""
    import torch

    def run(b: int) -> tuple[float, float]:
        x = torch.tensor([ids] * b, device=model.device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model(input_ids=x, use_cache=True)
            t1 = time.perf_counter()
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            t2 = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            t3 = time.perf_counter()
        return t1 - t0, t3 - t2

    return run


def _torch_speed(model, ids: list[int], new_tokens: int, batch: int) -> dict:
    """Prefill (one forward over the prompt) and cached greedy decode, timed separately."""
    run = _torch_runner(model, ids, new_tokens)
    prefill, decode = _fastest(lambda: run(1))
    _, decode_b = run(batch)
    return {
        "prefill_tok_s": len(ids) / prefill,
        "decode_tok_s": new_tokens / decode,
        "decode_tok_s_batched": batch * new_tokens / decode_b,
    }


def _torch_prompt_ids(loaded, cfg, examples, pool, n_tokens: int) -> list[int]:
    """The speed test's prompt: the first examples rendered as the parent's prompt, as token ids."""
    from odyssey.prompts import DemoSelector, render

    selector = DemoSelector(pool if cfg.shots else [], cfg.selection, cfg.shots, cfg.seed)
    texts = [render(loaded.tokenizer, cfg, ex, selector(ex), loaded.context_length - 64).text for ex in examples[:4]]
    return _speed_ids(lambda t: loaded.tokenizer(t, add_special_tokens=False)["input_ids"], texts, n_tokens)


def _examples(project, settings: dict):
    data = project.dataset()
    examples = data.split(settings["split"])[: settings.get("limit") or None]
    pool = data.splits.get("train", [])
    return examples, pool


def measure_transformers(project, request: dict) -> dict:
    from odyssey.evaluate import run_harness
    from odyssey.models import load
    from odyssey.optimize.common import weights_size
    from odyssey.prompts import PromptConfig

    settings = request["settings"]
    cfg = PromptConfig.from_dict(request["prompt"])
    loaded, load_stats = _timed_load(
        lambda: load(request["model_ref"], root=project.root, dtype=project.spec.evaluate.dtype)
    )
    examples, pool = _examples(project, settings)
    ids = _torch_prompt_ids(loaded, cfg, examples, pool, settings["speed_prompt_tokens"])
    speed = _torch_speed(loaded.model, ids, settings["speed_new_tokens"], settings["speed_batch"])
    # Speed is the candidate's own runtime (above); quality goes through the engine layer, which keeps
    # int8 and soft-prompt candidates on this loaded model and runs plain checkpoints where it is fastest.
    from odyssey.engines import open_engine

    with open_engine(
        request["model_ref"],
        root=project.root,
        evaluate=project.spec.evaluate,
        loaded=loaded,
        batch_size=settings["batch_size"],
        log_dir=project.state_dir,
    ) as engine:
        result = run_harness(
            engine,
            examples,
            cfg,
            project.spec.scope,
            pool=pool if cfg.shots else None,
            batch_size=settings["batch_size"],
            description="measuring",
        )
    quality = {k: v for k, v in result.metrics.items() if k in QUALITY_KEYS}
    return {
        "backend": "transformers",
        "model_ref": request["model_ref"],
        "n_params": loaded.n_params,
        "size_mb": weights_size(loaded.path) / 1e6,
        **load_stats,
        "peak_rss_gb": _peak_rss_gb(),
        **speed,
        "p50_latency_ms": result.metrics["p50_latency_ms"],
        "p95_latency_ms": result.metrics["p95_latency_ms"],
        "tokens_per_s": result.metrics["tokens_per_s"],
        "metrics": quality,
        "n_examples": len(examples),
        "rows": result.rows,
        "notes": result.notes,
    }


def _gguf_open(project, request: dict):
    """The GGUF file's path, a llama.cpp model on it, and the tokenizer whose template renders prompts."""
    from llama_cpp import Llama

    settings = request["settings"]
    path = Path(request["model_ref"])
    if not path.is_absolute():
        path = project.root / path
    tokenizer = _tokenizer_for_gguf(project, request)
    threads = settings.get("threads") or os.cpu_count() or 1
    llm = Llama(
        model_path=str(path), n_ctx=4096, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
    )
    return path, llm, tokenizer


def _gguf_rendered(project, request: dict, llm, tokenizer, examples, pool) -> tuple[list, int]:
    from odyssey.prompts import DemoSelector, PromptConfig, render

    cfg = PromptConfig.from_dict(request["prompt"])
    selector = DemoSelector(pool if cfg.shots else [], cfg.selection, cfg.shots, cfg.seed)
    max_new = int({"max_new_tokens": 64, **cfg.generation}["max_new_tokens"])
    return [render(tokenizer, cfg, ex, selector(ex), llm.n_ctx() - max_new) for ex in examples], max_new


def _gguf_tokenizer(llm, tokenizer):
    """text -> llama.cpp token ids, with a BOS only where no chat template supplies one."""
    from odyssey.prompts import has_chat_template

    add_bos = not has_chat_template(tokenizer)
    return lambda text: llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def _gguf_runner(llm, tokens, rendered, settings: dict):
    """``(ids, run)``: the speed prompt as llama.cpp tokens, and ``run()``: prefill it, then decode
    greedily one token at a time (single stream); returns (prefill seconds, decode seconds)."""
    import llama_cpp
    import numpy as np

    ids = _speed_ids(tokens, [r.text for r in rendered[:4]], settings["speed_prompt_tokens"])
    n_vocab = llm.n_vocab()

    def greedy() -> int:  # the last evaluated position's logits (Llama.scores is filled only with logits_all)
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(n_vocab,)).argmax())

    def run() -> tuple[float, float]:
        llm.reset()  # n_tokens = 0: the next eval overwrites the cache from position 0
        t_a = time.perf_counter()
        llm.eval(ids)
        t_b = time.perf_counter()
        tok = greedy()
        t_c = time.perf_counter()
        for _ in range(settings["speed_new_tokens"]):
            llm.eval([tok])
            tok = greedy()
        return t_b - t_a, time.perf_counter() - t_c

    return ids, run


def measure_gguf(project, request: dict) -> dict:
    from odyssey import metrics as metric_fns
    from odyssey.evaluate import percentile
    from odyssey.prompts import PromptConfig

    settings = request["settings"]
    cfg = PromptConfig.from_dict(request["prompt"])
    (path, llm, tokenizer), load_stats = _timed_load(lambda: _gguf_open(project, request))
    examples, pool = _examples(project, settings)
    rendered, max_new = _gguf_rendered(project, request, llm, tokenizer, examples, pool)
    generation = {"max_new_tokens": 64, **cfg.generation}
    tokens = _gguf_tokenizer(llm, tokenizer)
    ids, speed_run = _gguf_runner(llm, tokens, rendered, settings)
    prefill, decode = _fastest(speed_run)

    # Quality and latency: the same rendered prompts, greedy, one request at a time.
    predictions, latencies = [], []
    for r in rendered:
        llm.reset()
        start = time.perf_counter()
        out = llm.create_completion(
            tokens(r.text),
            max_tokens=max_new,
            temperature=0.0,
            top_k=1,
            repeat_penalty=float(generation.get("repetition_penalty", 1.0)),
            stop=["<|im_end|>"],
        )
        latencies.append((time.perf_counter() - start) * 1000)
        predictions.append(out["choices"][0]["text"].strip())
    references = [list(ex.references) for ex in examples]
    scope = project.spec.scope
    scored = metric_fns.compute(scope.metric_names, predictions, references, task=scope.task, labels=scope.labels)
    quality = {k: v for k, v in scored.corpus.items() if k in QUALITY_KEYS}
    rows = [
        {
            "example_id": ex.id,
            "prompt": r.text,
            "prediction": p,
            "references": list(ex.references),
            "scores": s,
            "latency_ms": lat,
        }
        for ex, r, p, s, lat in zip(examples, rendered, predictions, scored.per_example, latencies)
    ]
    return {
        "backend": "llama.cpp",
        "model_ref": str(path),
        "n_params": _gguf_params(llm),
        "size_mb": path.stat().st_size / 1e6,
        **load_stats,
        "peak_rss_gb": _peak_rss_gb(),
        "prefill_tok_s": len(ids) / prefill,
        "decode_tok_s": settings["speed_new_tokens"] / decode,
        "decode_tok_s_batched": None,
        "p50_latency_ms": percentile(latencies, 50),
        "p95_latency_ms": percentile(latencies, 95),
        "metrics": quality,
        "n_examples": len(examples),
        "rows": rows,
        "notes": [],
    }


def _gguf_params(llm) -> int | None:
    try:
        import llama_cpp

        return int(llama_cpp.llama_model_n_params(llm.model))
    except Exception:  # an older binding: the count is informational only
        return None


def _tokenizer_for_gguf(project, request: dict):
    """The tokenizer whose chat template renders prompts: the one the GGUF was exported from."""
    from transformers import AutoTokenizer

    if request.get("tokenizer_path") and Path(request["tokenizer_path"]).exists():
        return AutoTokenizer.from_pretrained(request["tokenizer_path"])
    from odyssey.models import resolve

    return AutoTokenizer.from_pretrained(resolve(request["model_ref"], project.root))


def _decode_runner(project, request: dict):
    """``run()`` -> single-stream decode tokens/s of one model, for the paired test."""
    from odyssey.optimize.common import is_gguf_ref

    settings = request["settings"]
    examples, pool = _examples(project, {**settings, "limit": 4})  # the speed prompt uses the first four
    if is_gguf_ref(request["model_ref"]):
        _, llm, tokenizer = _gguf_open(project, request)
        rendered, _ = _gguf_rendered(project, request, llm, tokenizer, examples, pool)
        _, run = _gguf_runner(llm, _gguf_tokenizer(llm, tokenizer), rendered, settings)
        return lambda: settings["speed_new_tokens"] / run()[1]
    from odyssey.models import load
    from odyssey.prompts import PromptConfig

    loaded = load(request["model_ref"], root=project.root, dtype=project.spec.evaluate.dtype)
    ids = _torch_prompt_ids(
        loaded, PromptConfig.from_dict(request["prompt"]), examples, pool, settings["speed_prompt_tokens"]
    )
    run = _torch_runner(loaded.model, ids, settings["speed_new_tokens"])
    return lambda: settings["speed_new_tokens"] / run(1)[1]


def paired_decode(project, request: dict) -> dict:
    """The child side of :func:`measure_paired`."""
    import statistics

    parent_request = {**request, "model_ref": request["parent_ref"], "tokenizer_path": None}
    runners = {"parent": _decode_runner(project, parent_request), "candidate": _decode_runner(project, request)}
    speeds: dict[str, list[float]] = {"parent": [], "candidate": []}
    for run in runners.values():  # warm-up: first-call allocations and lazy kernel selection
        run()
    for i in range(int(request["settings"]["paired_rounds"])):
        for role in ("parent", "candidate") if i % 2 == 0 else ("candidate", "parent"):
            speeds[role].append(runners[role]())
    ratios = [c / p for c, p in zip(speeds["candidate"], speeds["parent"])]
    return {
        "rounds": len(ratios),
        "decode_speedup": statistics.median(ratios),
        "round_ratios": ratios,
        "parent_decode_tok_s": speeds["parent"],
        "candidate_decode_tok_s": speeds["candidate"],
    }


def _handle(project, request: dict) -> dict:
    if request.get("kind") == "paired":
        return paired_decode(project, request)
    from odyssey.optimize.common import is_gguf_ref

    return (measure_gguf if is_gguf_ref(request["model_ref"]) else measure_transformers)(project, request)


def _child(request_path: str, out_path: str) -> None:
    from odyssey.project import Project

    request = json.loads(Path(request_path).read_text())
    threads = request["settings"].get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    project = Project.load(request["project"])
    result = _handle(project, request)
    Path(out_path).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    os.environ.setdefault("ODYSSEY_QUIET", "1")
    try:
        _child(sys.argv[1], sys.argv[2])
    except OdysseyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
