"""Scoring augmented pipelines like model candidates.

``evaluate_augmented(project, technique, dataset)`` runs one technique over one evaluation set,
records a run (stage ``augment``), a candidate ``<model>:<technique>`` whose config says how it
was augmented, its metrics, per-example outputs and the full traces.

Evaluation sets:
- ``grounded-qa`` (shipped): 48 questions about six small documents of a fictional outdoor shop
  (Markdown, HTML, text); 36 are answerable only from the documents, 12 are not answerable from
  them. Techniques: ``plain`` (closed book) and ``rag``. Metrics: accuracy (answerable: the
  reference appears in the answer; unanswerable: the answer says it is not in the documents),
  answerable accuracy, not-in-documents rate on the unanswerable ones, false refusals, token F1,
  and for RAG recall@k of the source document.
- ``arithmetic`` (shipped): 40 word problems with numeric answers. Techniques: ``plain``,
  ``cot``, ``cot-fewshot``, ``pal``, ``react``. Metric: accuracy (|answer - truth| <= 1e-6 * max(1, |truth|)).
- ``project``: the project's own test split scored with the scope's metrics (the board compares
  these with every other candidate). Techniques: ``plain`` and ``rag`` (over the project collection).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odyssey.errors import OdysseyError

DATA_DIR = Path(__file__).with_name("data")
DATASETS = ("grounded-qa", "arithmetic", "project")
TECHNIQUES = {
    "grounded-qa": ("plain", "rag"),
    "arithmetic": ("plain", "cot", "cot-fewshot", "pal", "react"),
    "project": ("plain", "rag"),
}
GROUNDED_COLLECTION = "odyssey-grounded-qa"


@dataclass
class AugmentEvalResult:
    run_id: int
    candidate: str
    model_ref: str
    technique: str
    dataset: str
    n: int
    metrics: dict[str, float]
    rows: list[dict] = field(default_factory=list)

    def as_dict(self, with_rows: bool = False) -> dict:
        out = asdict(self)
        if not with_rows:
            out.pop("rows")
        return out


def grounded_docs_dir() -> Path:
    return DATA_DIR / "grounded_qa" / "docs"


def load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def grounded_questions(limit: int | None = None) -> list[dict]:
    """The grounded-QA set; with a limit, answerable and unanswerable questions in the set's ratio."""
    items = load_jsonl(DATA_DIR / "grounded_qa" / "questions.jsonl")
    if not limit or limit >= len(items):
        return items
    answerable = [q for q in items if q["answerable"]]
    n_answerable = min(len(answerable), max(1, round(limit * len(answerable) / len(items))))
    return answerable[:n_answerable] + [q for q in items if not q["answerable"]][: limit - n_answerable]


def arithmetic_problems() -> list[dict]:
    return load_jsonl(DATA_DIR / "arithmetic.jsonl")


def grounded_collection(project):
    """The shipped documents as a collection in the project (ingested once; re-ingest is a no-op)."""
    from odyssey.augment.index import Collection, collections_dir

    cfg = project.spec.augment
    coll = Collection(
        collections_dir(project) / GROUNDED_COLLECTION,
        GROUNDED_COLLECTION,
        embedder=cfg.embedder,
        chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap,
    )
    coll.ingest([grounded_docs_dir()], base=grounded_docs_dir())
    return coll


# ---- scoring ------------------------------------------------------------------------------------
def contains_answer(prediction: str, answers: list[str]) -> bool:
    from odyssey.metrics import normalize_answer

    pred = f" {normalize_answer(prediction)} "
    return any(f" {normalize_answer(a)} " in pred for a in answers if normalize_answer(a))


def numeric_correct(answer, truth: float) -> bool:
    from odyssey.augment.answers import parse_number

    value = parse_number(answer)
    return value is not None and abs(value - float(truth)) <= 1e-6 * max(1.0, abs(float(truth)))


def score_grounded(items: list[dict], answers: list, hits: list[list] | None, k: int) -> tuple[dict, list[dict]]:
    from odyssey.metrics import token_f1

    per = []
    for item, ans in zip(items, answers):
        if item["answerable"]:
            correct = (not ans.refused) and contains_answer(ans.answer, item["answers"])
        else:
            correct = ans.refused
        per.append({"correct": correct, "refused": ans.refused, "answerable": item["answerable"]})
    answerable = [p for p in per if p["answerable"]]
    unanswerable = [p for p in per if not p["answerable"]]
    metrics = {
        "accuracy": statistics.fmean(p["correct"] for p in per),
        "answerable_accuracy": statistics.fmean(p["correct"] for p in answerable) if answerable else 0.0,
        "not_in_documents_rate": statistics.fmean(p["refused"] for p in unanswerable) if unanswerable else 0.0,
        "false_refusal_rate": statistics.fmean(p["refused"] for p in answerable) if answerable else 0.0,
    }
    pairs = [(a.answer, item["answers"]) for item, a in zip(items, answers) if item["answerable"]]
    if pairs:
        f1 = token_f1([p for p, _ in pairs], [r for _, r in pairs])
        metrics["f1"] = f1.corpus["f1"]
    if hits is not None:
        found = [any(h.source == item["source"] for h in hs[:k]) for item, hs in zip(items, hits) if item["answerable"]]
        metrics[f"recall@{k}"] = statistics.fmean(found) if found else 0.0
        first = [bool(hs) and hs[0].source == item["source"] for item, hs in zip(items, hits) if item["answerable"]]
        metrics["recall@1"] = statistics.fmean(first) if first else 0.0
    return metrics, per


# ---- the entry point --------------------------------------------------------------------------
def evaluate_augmented(
    project,
    technique: str,
    dataset: str = "auto",
    *,
    model: str | None = None,
    collection: str | None = None,
    limit: int | None = None,
    model_obj=None,
    batch_size: int = 8,
) -> AugmentEvalResult:
    """Run ``technique`` on ``dataset`` and record it as candidate ``<model>:<technique>``."""
    from odyssey.augment.llm import ChatModel
    from odyssey.models import parse_ref
    from odyssey.store.augment import add_traces

    if dataset == "auto":
        dataset = "arithmetic" if technique in {"cot", "cot-fewshot", "pal", "react"} else "grounded-qa"
    if dataset not in DATASETS:
        raise OdysseyError(f"unknown evaluation set {dataset!r}", hint=f"use one of {', '.join(DATASETS)}")
    if technique not in TECHNIQUES[dataset]:
        raise OdysseyError(
            f"technique {technique!r} does not apply to the {dataset} set",
            hint=f"for {dataset} use one of {', '.join(TECHNIQUES[dataset])}",
        )
    if limit is not None and limit < 1:
        raise OdysseyError(f"--limit must be at least 1 (got {limit})")
    opts = project.spec.augment
    ref = model or (model_obj.ref if model_obj is not None else project.default_model())
    slug = parse_ref(ref, project.root).slug
    name = f"{slug}:{technique}" if dataset == "project" else f"{slug}:{technique}@{dataset}"
    settings = {
        "technique": technique,
        "dataset": dataset,
        "model": ref,
        "limit": limit,
        "augment": opts.model_dump(mode="json"),
        "collection": collection,
    }
    store = project.store
    started = time.perf_counter()
    with store.run("augment", project.spec.as_dict(), settings) as run:
        chat = model_obj or ChatModel.load(
            ref, project.root, max_new_tokens=opts.max_new_tokens, batch_size=batch_size, evaluate=project.spec.evaluate
        )
        rows, traces = [], []
        if dataset in {"grounded-qa", "project"}:
            metrics, rows, traces, coll_name = _qa_eval(project, chat, technique, dataset, collection, limit, opts)
            settings["collection"] = coll_name
        else:
            metrics, rows, traces = _arithmetic_eval(project, chat, technique, limit, opts)
        metrics["seconds_per_question"] = (time.perf_counter() - started) / max(len(rows), 1)
        base = store.candidate(f"{slug}:zero-shot")
        prompt_cfg = project.default_prompt()
        cand_id = store.upsert_candidate(
            name,
            "augment",
            ref,
            {
                "prompt": prompt_cfg.as_dict(),
                "augment": {
                    "technique": technique,
                    "dataset": dataset,
                    "collection": settings["collection"],
                    "options": settings["augment"],
                },
            },
            base["id"] if base else None,
            run.id,
        )
        split = "test" if dataset == "project" else dataset
        store.add_outputs(run.id, rows, candidate_id=cand_id, split=split)
        add_traces(store, run.id, traces, candidate_id=cand_id)
        run.log_metrics(metrics, candidate_id=cand_id, split=split)
        run.set_summary({"candidate": name, "technique": technique, "dataset": dataset, "metrics": metrics})
    return AugmentEvalResult(run.id, name, ref, technique, dataset, len(rows), metrics, rows)


def _qa_eval(project, chat, technique, dataset, collection, limit, opts):
    from odyssey.augment import rag
    from odyssey.augment.index import Collection

    if dataset == "grounded-qa":
        items = grounded_questions(limit)
        coll = grounded_collection(project) if technique == "rag" else None
    else:
        examples = project.examples("test", limit)
        items = [
            {"id": ex.id, "question": ex.input, "answers": list(ex.references), "answerable": True, "source": None}
            for ex in examples
        ]
        coll = Collection.for_project(project, collection, must_exist=True) if technique == "rag" else None
    questions = [it["question"] for it in items]
    hits = None
    if technique == "rag":
        hits = rag.retrieve(coll, questions, opts.model_copy(update={"top_k": max(opts.top_k, 5)}))
        answers = rag.answer(chat, coll, questions, opts, hits=[h[: opts.top_k] for h in hits])
    else:
        answers = rag.closed_book(chat, questions)
    if dataset == "grounded-qa":
        metrics, per = score_grounded(items, answers, hits, 5)
    else:
        from odyssey import metrics as metric_fns

        scope = project.spec.scope
        scored = metric_fns.compute(
            scope.metric_names,
            [a.answer for a in answers],
            [it["answers"] for it in items],
            task=scope.task,
            labels=scope.labels,
        )
        metrics, per = dict(scored.corpus), scored.per_example
    rows, traces = [], []
    for it, a, p in zip(items, answers, per):
        scores = {k: float(v) for k, v in p.items() if isinstance(v, (int, float, bool))}
        rows.append(
            {
                "example_id": it["id"],
                "prompt": a.prompt or it["question"],
                "prediction": a.answer,
                "references": it["answers"],
                "scores": scores,
            }
        )
        traces.append(
            {
                "example_id": it["id"],
                "technique": technique,
                "question": it["question"],
                "answer": a.answer,
                "correct": p.get("correct"),
                "trace": [
                    {"citations": a.citations, "sources": a.sources, "refused": a.refused, "relevant": a.relevant}
                ],
            }
        )
    return metrics, rows, traces, (coll.name if coll else None)


def _arithmetic_eval(project, chat, technique, limit, opts):
    from odyssey.augment.reasoning import solve

    items = arithmetic_problems()[: limit or None]
    results = solve(chat, [it["question"] for it in items], technique, numeric=True, options=opts)
    rows, traces, correct = [], [], []
    for it, r in zip(items, results):
        ok = numeric_correct(r.answer, it["answer"])
        correct.append(ok)
        rows.append(
            {
                "example_id": it["id"],
                "prompt": it["question"],
                "prediction": r.answer or "",
                "references": [str(it["answer"])],
                "scores": {"correct": float(ok)},
            }
        )
        traces.append(
            {
                "example_id": it["id"],
                "technique": technique,
                "question": it["question"],
                "answer": r.answer,
                "correct": ok,
                "error": r.error,
                "trace": {"outputs": r.outputs, "steps": r.trace},
            }
        )
    metrics = {
        "accuracy": statistics.fmean(correct),
        "answered_rate": statistics.fmean(r.answer is not None for r in results),
    }
    if technique == "pal":
        metrics["program_success_rate"] = statistics.fmean(
            bool(r.trace and r.trace[0].get("ok") and r.trace[0].get("value") is not None) for r in results
        )
        metrics["fallback_rate"] = statistics.fmean(any("fallback" in s for s in r.trace) for r in results)
    if technique == "react":
        metrics["finish_rate"] = statistics.fmean(r.error is None for r in results)
        metrics["mean_steps"] = statistics.fmean(len(r.trace) for r in results)
    return metrics, rows, traces
