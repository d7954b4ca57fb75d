"""Preference data: one JSONL shape ``{prompt, chosen, rejected, source, annotator}`` from every source.

Sources (``align.preferences`` in the spec, or ``odyssey align prefs --source ...``):

- ``file``: a user's JSONL/JSON file, in this shape, in TRL's conversational shape (lists of messages),
  or Anthropic-HH style (``chosen``/``rejected`` whole conversations that share the prompt);
- ``hf``: a Hugging Face preference dataset id (same shapes);
- ``reference``: for tasks with references, the reference is chosen over a model sample;
- ``outputs``: the reference is chosen over answers earlier runs already stored (train/validation only);
- ``metric``: two model samples for a training example, the one scoring higher on the task metric
  against the reference is chosen (ties dropped);
- ``judge``: two model samples ranked by a judge model against the spec's rubric (the judge's
  prompt and verdict are kept with the pair);
- ``feedback``: what people gave in ``odyssey serve``: choices on the compare page, corrections
  (correction chosen over the output) and thumbs (a liked output over a disliked one for the same prompt).

``prompt`` is always the exact text the model continues (the rendered prompt for task sources), so
the reward model, DPO and PPO all see the same strings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, Unavailable

FIELDS = ("prompt", "chosen", "rejected", "source", "annotator")


@dataclass
class PreferenceSet:
    pairs: list[dict[str, Any]]
    sources: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    id: int | None = None
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return pairs_hash(self.pairs)

    def split(self, held_out: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
        """A deterministic split by prompt (pairs of one prompt stay on one side), so held-out accuracy is honest."""
        prompts = sorted(
            {p["prompt"] for p in self.pairs}, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest()
        )
        n_test = max(1, round(len(prompts) * held_out)) if len(prompts) > 1 else 0
        test_prompts = set(prompts[:n_test])
        train = [p for p in self.pairs if p["prompt"] not in test_prompts]
        test = [p for p in self.pairs if p["prompt"] in test_prompts]
        return train, test


def pairs_hash(pairs: list[dict]) -> str:
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps([p.get(k) for k in FIELDS], ensure_ascii=False).encode())
    return digest.hexdigest()


def write_jsonl(pairs: list[dict], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            row = {k: p.get(k) for k in FIELDS}
            if p.get("meta"):
                row["meta"] = p["meta"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ---- parsing user data ------------------------------------------------------------------------
def _split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anthropic-HH rows hold whole conversations; the prompt is what they share up to the last
    'Assistant:' turn, the responses are what follows."""
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker)
    if cut < 0 or not rejected.startswith(chosen[: cut + len(marker)]):
        # Fall back to the longest common prefix, ending at a marker if one is inside it.
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        cut_at = chosen.rfind(marker, 0, n)
        n = cut_at + len(marker) if cut_at >= 0 else n
        return chosen[:n], chosen[n:], rejected[n:]
    end = cut + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def _text_of(messages) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def normalize_row(row: dict, where: str, source: str, annotator: str | None = None) -> dict:
    """One record of a user's file or dataset as a pair; names the record when it is not one."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        keys = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
        raise OdysseyError(
            f"{where}: a preference record needs 'chosen' and 'rejected' (found: {keys})",
            hint='each line: {"prompt": ..., "chosen": ..., "rejected": ...}; Anthropic-HH rows '
            "(chosen/rejected conversations) are accepted too",
        )
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list):  # TRL conversational shape
        if prompt is None:
            prompt_msgs, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
        else:
            prompt_msgs = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        prompt = _text_of(prompt_msgs) + "\nassistant: "
        chosen = " ".join(m.get("content", "") for m in chosen)
        rejected = " ".join(m.get("content", "") for m in rejected)
    elif prompt is None:
        prompt, chosen, rejected = _split_hh(str(chosen), str(rejected))
    for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise OdysseyError(f"{where}: '{name}' must be text, got {type(value).__name__}")
    if not chosen.strip() or not rejected.strip():
        raise OdysseyError(
            f"{where}: 'chosen' and 'rejected' must both be non-empty", hint="drop the record or fill in both responses"
        )
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "source": row.get("source") or source,
        "annotator": row.get("annotator") or annotator,
        "meta": row.get("meta") or {},
    }


def from_file(path: Path, limit: int | None = None) -> list[dict]:
    from odyssey.data import read_records

    path = Path(path)
    rows = read_records(path)
    if not rows:
        raise OdysseyError(
            f"{path}: no preference records", hint="one JSON object per line with prompt/chosen/rejected"
        )
    out = [normalize_row(r, f"{path}:{i}", f"file:{path.name}", "user") for i, r in enumerate(rows[: limit or None], 1)]
    return out


def from_hf(dataset_id: str, split: str = "train", limit: int | None = None) -> list[dict]:
    try:
        import datasets

        data = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, no such split
        raise Unavailable(
            f"could not load preference dataset {dataset_id!r} (split {split!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            hint="check the id and the network; offline, export it to a JSONL file and use kind: file",
        ) from exc
    rows = data.select(range(min(limit, len(data)))) if limit else data
    return [normalize_row(dict(r), f"{dataset_id}[{i}]", f"hf:{dataset_id}", "dataset") for i, r in enumerate(rows)]


def from_feedback(store) -> list[dict]:
    """Pairs from what `odyssey serve` captured (read through the store)."""
    from odyssey.store.align import feedback_rows

    pairs, by_prompt = [], {}
    for f in feedback_rows(store):
        who = f.get("annotator") or (f"key:{f['key_id']}" if f.get("key_id") else "user")
        meta = {"feedback_id": f["id"], "request_id": f.get("request_id"), "candidate": f.get("candidate")}
        if f["kind"] == "preference" and f.get("chosen") and f.get("rejected") and f.get("prompt") is not None:
            pairs.append(
                {
                    "prompt": f["prompt"],
                    "chosen": f["chosen"],
                    "rejected": f["rejected"],
                    "source": "feedback:compare",
                    "annotator": who,
                    "meta": meta,
                }
            )
        elif f["kind"] == "correction" and f.get("correction") and f.get("output") and f.get("prompt") is not None:
            if f["correction"].strip() != f["output"].strip():
                pairs.append(
                    {
                        "prompt": f["prompt"],
                        "chosen": f["correction"],
                        "rejected": f["output"],
                        "source": "feedback:correction",
                        "annotator": who,
                        "meta": meta,
                    }
                )
        elif f["kind"] in {"thumbs", "rating"} and f.get("output") and f.get("prompt") is not None:
            if f["kind"] == "thumbs":
                good = (f.get("thumbs") or 0) > 0
            else:  # ratings on a 0-1 or a 1-5 scale
                rating = f.get("rating") or 0
                good = rating >= (4 if rating > 1 else 0.5)
            bad = not good
            slot = by_prompt.setdefault(f["prompt"], {"good": [], "bad": []})
            if good:
                slot["good"].append((f["output"], who, meta))
            elif bad:
                slot["bad"].append((f["output"], who, meta))
    for prompt, slot in by_prompt.items():
        for (good, who, meta), (bad, _, bad_meta) in zip(slot["good"], slot["bad"]):
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": good,
                    "rejected": bad,
                    "source": "feedback:thumbs",
                    "annotator": who,
                    "meta": {"chosen": meta, "rejected": bad_meta},
                }
            )
    return pairs


# ---- pairs from model samples -----------------------------------------------------------------
def sample_responses(
    loaded,
    prompts: list[str],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[list[str]]:
    """``n`` sampled responses per prompt (seeds seed, seed+1, ...), from an engine
    (``odyssey.engines.open_engine``) or a loaded transformers model."""
    from odyssey.evaluate import as_engine

    engine = as_engine(loaded, batch_size)
    out = [[] for _ in prompts]
    for k in range(n):
        settings = {
            "max_new_tokens": max_new_tokens,
            "do_sample": True,
            "temperature": temperature,
            "top_k": 0,
            "top_p": 1.0,
            "seed": seed + k,
        }
        gens, _ = engine.generate(prompts, settings, batch_size=batch_size, description=f"sampling {k + 1}/{n}")
        for i, g in enumerate(gens):
            out[i].append(g.text)
    return out


def from_reference(prompts: list[str], examples, samples: list[list[str]], annotator: str) -> list[dict]:
    pairs = []
    for prompt, ex, outs in zip(prompts, examples, samples):
        for s in outs[:1]:
            if ex.references and s.strip() and s.strip() != ex.target.strip():
                pairs.append(
                    {
                        "prompt": prompt,
                        "chosen": ex.target,
                        "rejected": s,
                        "source": "reference",
                        "annotator": "reference",
                        "meta": {"example_id": ex.id, "sampled_by": annotator},
                    }
                )
    return pairs


def from_stored_outputs(store, splits=("train", "validation"), limit: int | None = None) -> list[dict]:
    """Reference chosen over answers earlier runs (prompt search, eval) stored for training/validation
    examples: pairs without sampling anything. Test-split outputs are never used (that would leak the test set)."""
    from odyssey.store.align import stored_outputs

    pairs, seen = [], set()
    for r in stored_outputs(store, tuple(splits)):
        refs = r["references"] or []
        if not refs or not r["prediction"].strip() or r["prediction"].strip() == refs[0].strip():
            continue
        key = (r["prompt"], r["prediction"])
        if key in seen:
            continue
        seen.add(key)
        pairs.append(
            {
                "prompt": r["prompt"],
                "chosen": refs[0],
                "rejected": r["prediction"],
                "source": "reference:outputs",
                "annotator": "reference",
                "meta": {"example_id": r["example_id"], "answered_by": r["candidate"]},
            }
        )
    return pairs[: limit or None]


def from_metric(
    prompts: list[str],
    examples,
    samples: list[list[str]],
    metric: str,
    task: str,
    annotator: str,
    min_gap: float = 0.02,
) -> list[dict]:
    """Chosen = the sample scoring higher on the task metric against the references."""
    from odyssey import metrics as metric_fns

    keep = [i for i, ex in enumerate(examples) if ex.references and len(samples[i]) >= 2]
    prompts, examples, samples = [prompts[i] for i in keep], [examples[i] for i in keep], [samples[i] for i in keep]
    if not keep:
        return []
    flat_preds = [s for outs in samples for s in outs[:2]]
    flat_refs = [list(ex.references) for ex, outs in zip(examples, samples) for _ in outs[:2]]
    scored = metric_fns.compute([metric], flat_preds, flat_refs, task=task).per_example
    pairs, k = [], 0
    for prompt, ex, outs in zip(prompts, examples, samples):
        a, b = outs[0], outs[1]
        sa, sb = scored[k].get(metric, 0.0), scored[k + 1].get(metric, 0.0)
        k += 2
        if abs(sa - sb) < min_gap or a.strip() == b.strip() or not a.strip() or not b.strip():
            continue
        chosen, rejected, sc, sr = (a, b, sa, sb) if sa > sb else (b, a, sb, sa)
        pairs.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "source": f"metric:{metric}",
                "annotator": annotator,
                "meta": {"example_id": ex.id, "chosen_score": sc, "rejected_score": sr},
            }
        )
    return pairs


def build_preferences(
    project, *, sources: list | None = None, start=None, n_pairs: int | None = None, loaded=None, seed: int = 0
) -> PreferenceSet:
    """Collect pairs from every configured source, record the set in the store, write its JSONL."""
    from odyssey.align.common import starting_candidate
    from odyssey.spec import PreferenceSource

    spec = project.spec
    sources = [
        s if isinstance(s, PreferenceSource) else PreferenceSource(**s) for s in (sources or spec.align.preferences)
    ]
    start = start or starting_candidate(project)
    n_pairs = n_pairs or spec.align.pairs
    pairs, counts, notes = [], {}, []
    model_sources = [s for s in sources if s.kind in {"reference", "metric", "judge"}]
    sampled = _Sampled()
    if model_sources:
        sampled = _sample_train_answers(project, start, model_sources, n_pairs, loaded, seed, notes)
    for src in sources:
        got = _pairs_from_source(project, src, start, sampled, notes)
        got = got[: src.limit] if src.limit else got
        counts[src.kind] = counts.get(src.kind, 0) + len(got)
        pairs += got
    if len(pairs) < 2:
        raise OdysseyError(
            f"only {len(pairs)} preference pair(s) from sources {[s.kind for s in sources]}",
            hint="add sources under align.preferences (e.g. kind: reference, kind: file), raise "
            "align.pairs, or label pairs in `odyssey serve`'s compare page",
        )
    return _record_preference_set(project, PreferenceSet(pairs, counts, notes), start)


@dataclass
class _Sampled:
    """Two model answers per training example, for the reference, metric and judge sources."""

    prompts: list[str] | None = None
    examples: list | None = None
    samples: list[list[str]] | None = None


def _sample_train_answers(
    project, start, model_sources: list, n_pairs: int, loaded, seed: int, notes: list
) -> _Sampled:
    """Two sampled answers from the start candidate (through ``loaded``, else an engine opened and closed
    here) to each of the first ``n_pairs`` training examples."""
    from odyssey.align.common import render_prompts
    from odyssey.engines import open_engine

    spec = project.spec
    data = project.dataset()
    examples = data.split("train")[:n_pairs]
    if not any(ex.references for ex in examples) and any(s.kind in {"reference", "metric"} for s in model_sources):
        notes.append(
            "the train split has no references: reference/metric sources made no pairs "
            "(set scope.data.fields.target, or use kind judge/file/hf/feedback)"
        )
    opened = loaded is None
    if opened:
        loaded = open_engine(
            start.model_ref,
            root=project.root,
            evaluate=spec.evaluate,
            batch_size=spec.evaluate.batch_size,
            log_dir=project.state_dir,
        )
    max_new = int(start.prompt.generation.get("max_new_tokens", 64))
    prompts = render_prompts(loaded, start.prompt, examples, data.splits.get("train"), max_new)
    samples = sample_responses(
        loaded, prompts, n=2, max_new_tokens=max_new, seed=seed, batch_size=spec.evaluate.batch_size
    )
    if opened:
        loaded.close()
    return _Sampled(prompts, examples, samples)


def _pairs_from_source(project, src, start, sampled: _Sampled, notes: list) -> list[dict]:
    """The pairs one source gives (before its limit); a note when a store source has none yet."""
    from odyssey.align.judge import judge_pairs

    spec = project.spec
    if src.kind == "file":
        path = Path(src.path)
        return from_file(path if path.is_absolute() else project.root / path, src.limit)
    if src.kind == "hf":
        return from_hf(src.id, src.split, src.limit)
    if src.kind == "feedback":
        got = from_feedback(project.store)
        if not got:
            notes.append("no feedback captured by `odyssey serve` yet")
        return got
    if src.kind == "outputs":
        got = from_stored_outputs(project.store, limit=src.limit)
        if not got:
            notes.append("no stored answers on train/validation yet (run `odyssey prompt` first)")
        return got
    if src.kind == "reference":
        return from_reference(sampled.prompts, sampled.examples, sampled.samples, start.name)
    if src.kind == "metric":
        metric = "rougeL" if "rougeL" in spec.scope.metric_names else spec.scope.primary_metric
        return from_metric(sampled.prompts, sampled.examples, sampled.samples, metric, spec.scope.task, start.name)
    if src.kind == "judge":
        return judge_pairs(project, sampled.prompts, [s[:2] for s in sampled.samples], sampled.examples)
    raise OdysseyError(f"unknown preference source {src.kind!r}")  # pragma: no cover - the spec forbids other kinds


def _record_preference_set(project, pset: PreferenceSet, start) -> PreferenceSet:
    """The set in the store (its pairs, sources and the run that made it), its JSONL as the run's artifact."""
    from odyssey.store.align import save_preference_set

    pairs, counts, notes = pset.pairs, pset.sources, pset.notes
    with project.store.run(
        "align", project.spec.as_dict(), {"action": "preferences", "sources": counts, "start": start.as_dict()}
    ) as run:
        path = write_jsonl(pairs, run.artifacts_dir / "preferences.jsonl")
        run.add_artifact(path, "preferences")
        pset.id = save_preference_set(
            project.store, f"prefs-{pset.sha256[:8]}", pset.sha256, pairs, sources=counts, path=str(path), run_id=run.id
        )
        pset.path = path
        run.set_summary(
            {"preference_set": pset.id, "sha256": pset.sha256, "pairs": len(pairs), "sources": counts, "notes": notes}
        )
    return pset


def load_preference_set(project, ref: int | str | None = None) -> PreferenceSet:
    """A stored set (latest by default)."""
    from odyssey.store.align import preference_pairs, preference_set

    row = preference_set(project.store, ref)
    if row is None:
        raise OdysseyError(
            "no preference data in the store" if ref is None else f"no preference set {ref!r}",
            hint="run `odyssey align prefs` first (sources: align.preferences in odyssey.yaml)",
        )
    pairs = [
        {
            "prompt": p["prompt"],
            "chosen": p["chosen"],
            "rejected": p["rejected"],
            "source": p["source"],
            "annotator": p["annotator"],
            "meta": p["meta"],
        }
        for p in preference_pairs(project.store, row["id"])
    ]
    return PreferenceSet(pairs, row["sources"], [], row["id"], Path(row["path"]) if row["path"] else None)


def queue_for_labelling(project, n: int = 50, seed: int = 0) -> int:
    """Sample two responses per training prompt from the current candidate and put the pairs on the
    compare page's queue (``odyssey serve``); people's choices come back as kind=feedback pairs."""
    from odyssey.align.common import render_prompts, starting_candidate
    from odyssey.engines import open_engine
    from odyssey.store.deploy import enqueue_pairs

    start = starting_candidate(project)
    data = project.dataset()
    examples = data.split("train")[:n]
    max_new = int(start.prompt.generation.get("max_new_tokens", 64))
    with open_engine(
        start.model_ref, root=project.root, evaluate=project.spec.evaluate, log_dir=project.state_dir
    ) as loaded:
        prompts = render_prompts(loaded, start.prompt, examples, data.splits.get("train"), max_new)
        samples = sample_responses(loaded, prompts, n=2, max_new_tokens=max_new, seed=seed)
    rows = [
        {
            "prompt": p,
            "a": s[0],
            "b": s[1],
            "a_label": f"{start.name}#sample1",
            "b_label": f"{start.name}#sample2",
            "source": "align",
        }
        for p, s in zip(prompts, samples)
        if s[0].strip() != s[1].strip()
    ]
    return enqueue_pairs(project.store, rows)
