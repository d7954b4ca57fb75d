"""Measure an optimized candidate beside its parent and record both in the store: the metrics
table (so the board and the gates see size, memory, latency and quality), the per-example outputs,
and the optimize stage's measurement table (speed, sizes, comparison with the parent)."""

from __future__ import annotations

import hashlib
import json

from odyssey.optimize.common import Parent


def settings_key(settings: dict, prompt: dict) -> str:
    blob = json.dumps({"settings": settings, "prompt": prompt}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _board_metrics(m: dict) -> dict:
    """What goes into the shared metrics table: quality, the gate metrics, and the speed numbers."""
    out = dict(m.get("metrics", {}))
    out.update(
        {
            "p50_latency_ms": m.get("p50_latency_ms"),
            "p95_latency_ms": m.get("p95_latency_ms"),
            "memory_gb": m.get("peak_rss_gb"),
            "size_mb": m.get("size_mb"),
            "decode_tok_s": m.get("decode_tok_s"),
            "prefill_tok_s": m.get("prefill_tok_s"),
            "decode_tok_s_batched": m.get("decode_tok_s_batched"),
            "load_rss_gb": m.get("load_rss_gb"),
            "n_params": m.get("n_params"),
        }
    )
    return {k: v for k, v in out.items() if v is not None}


def measure_parent(project, run, parent: Parent, settings: dict, key: str, tokenizer_path: str | None = None) -> dict:
    """The parent's measurement under these settings: reused from the store, or measured now."""
    from odyssey.optimize.measure import measure_model
    from odyssey.store.optimize import add_measurement, latest_measurement

    store = project.store
    cached = latest_measurement(store, parent.id, key, parent.model_ref) if parent.id else None
    if cached:
        return cached
    m = measure_model(
        project, parent.model_ref, parent.prompt, settings=settings, label=parent.name, tokenizer_path=tokenizer_path
    )
    split = settings["split"]
    store.add_outputs(run.id, m.get("rows", []), candidate_id=parent.id, split=split)
    run.log_metrics(_board_metrics(m), candidate_id=parent.id, split=split)
    add_measurement(
        store,
        candidate_id=parent.id,
        parent_id=None,
        run_id=run.id,
        model_ref=parent.model_ref,
        method="parent",
        settings_key=key,
        measurement=m,
    )
    return m


def measure_and_record(
    project,
    run,
    cand_id: int,
    name: str,
    model_ref: str,
    parent: Parent,
    method: dict,
    *,
    tokenizer_path: str | None = None,
    settings: dict | None = None,
) -> tuple[dict, dict]:
    from odyssey.optimize.measure import compare, measure_model, measure_paired, settings_for
    from odyssey.store.optimize import add_measurement

    settings = settings or settings_for(project)
    key = settings_key(settings, parent.prompt.as_dict())
    parent_m = measure_parent(project, run, parent, settings, key)
    child = measure_model(
        project, model_ref, parent.prompt, settings=settings, label=name, tokenizer_path=tokenizer_path
    )
    paired = measure_paired(
        project,
        parent.model_ref,
        model_ref,
        parent.prompt,
        settings=settings,
        label=name,
        tokenizer_path=tokenizer_path,
    )
    comparison = compare(child, parent_m, paired)
    split = settings["split"]
    project.store.add_outputs(run.id, child.get("rows", []), candidate_id=cand_id, split=split)
    run.log_metrics(_board_metrics(child), candidate_id=cand_id, split=split)
    add_measurement(
        project.store,
        candidate_id=cand_id,
        parent_id=parent.id,
        run_id=run.id,
        model_ref=model_ref,
        method=method.get("method"),
        settings_key=key,
        measurement=child,
        comparison=comparison,
    )
    child = {k: v for k, v in child.items() if k != "rows"}
    parent_m = {k: v for k, v in parent_m.items() if k != "rows"}
    return {"candidate": child, "parent": parent_m}, comparison
