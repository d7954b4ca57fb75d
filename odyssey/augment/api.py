"""The augment stage's entry functions; the CLI and the Python API both call these, and each
records a run (stage ``augment``) in the project's store.

    ingest(project, ["docs/"], collection="handbook")   -> IngestReport
    ask(project, "What is the refund window?")          -> RagAnswer (with citations)
    reason(project, "...", strategy="pal")              -> ReasonResult (with its trace)
    evaluate_augmented(project, "rag", "grounded-qa")   -> AugmentEvalResult (a candidate on the board)
"""

from __future__ import annotations

from pathlib import Path

from odyssey.errors import OdysseyError


def ingest(project, paths: list[str | Path] | None = None, *, collection: str | None = None, rebuild: bool = False):
    from odyssey.augment.index import Collection

    cfg = project.spec.augment
    if not paths:
        if not cfg.documents:
            raise OdysseyError(
                "no documents to ingest",
                hint="give a folder (`odyssey rag ingest docs/`) or set augment.documents in odyssey.yaml",
            )
        paths = [cfg.documents]
    from odyssey.urls import refuse_url

    for p in paths:
        refuse_url(str(p), "augment.documents" if p == cfg.documents else "ingest", "odyssey rag ingest")
    # Relative paths are the project's (as in odyssey.yaml), whatever the caller's working directory.
    resolved = [p if p.is_absolute() else project.root / p for p in map(Path, paths)]
    coll = Collection.for_project(project, collection)
    if rebuild:
        coll.drop()
        coll = Collection.for_project(project, collection)
    elif coll.exists and coll.embedder != cfg.embedder:
        raise OdysseyError(
            f"collection {coll.name!r} was embedded with {coll.embedder}, the spec now says {cfg.embedder}",
            hint="re-embed everything with `odyssey rag ingest --rebuild`",
        )
    config = {"collection": coll.name, "paths": [str(p) for p in resolved], "rebuild": rebuild}
    with project.store.run("augment", project.spec.as_dict(), {"action": "ingest", **config}) as run:
        report = coll.ingest(resolved, base=project.root)
        run.log_metrics(
            {
                "chunks": report.total_chunks,
                "chunks_added": report.chunks_added,
                "chunks_removed": report.chunks_removed,
                "ingest_seconds": report.seconds,
            }
        )
        run.set_summary(report.as_dict())
    return report


def search(project, query: str, *, collection: str | None = None, k: int | None = None, mode: str | None = None):
    from odyssey.augment.index import Collection

    cfg = project.spec.augment
    coll = Collection.for_project(project, collection, must_exist=True)
    return coll.search(query, k=k or cfg.top_k, mode=mode or cfg.retrieval, reranker=cfg.reranker)


def ask(
    project,
    question: str,
    *,
    collection: str | None = None,
    model: str | None = None,
    k: int | None = None,
    mode: str | None = None,
    model_obj=None,
):
    """Answer one question from a collection, citing sources (or say it is not in the documents)."""
    from odyssey.augment import rag
    from odyssey.augment.index import Collection
    from odyssey.augment.llm import ChatModel
    from odyssey.store.augment import add_traces

    if not question.strip():
        raise OdysseyError("the question is empty", hint='odyssey rag ask "What is the refund window?"')
    cfg = project.spec.augment
    updates = {key: value for key, value in (("top_k", k), ("retrieval", mode)) if value is not None}
    opts = cfg.model_copy(update=updates)
    coll = Collection.for_project(project, collection, must_exist=True)
    ref = model or (model_obj.ref if model_obj is not None else project.default_model())
    with project.store.run(
        "augment",
        project.spec.as_dict(),
        {"action": "ask", "collection": coll.name, "model": ref, "question": question},
    ) as run:
        hits = rag.retrieve(coll, [question], opts)
        relevant = any(h.similarity is not None and h.similarity >= opts.min_similarity for h in hits[0])
        chat = model_obj or (
            ChatModel.load(ref, project.root, max_new_tokens=opts.max_new_tokens, evaluate=project.spec.evaluate)
            if relevant
            else None
        )
        answer = rag.answer(chat, coll, [question], opts, hits=hits)[0]
        add_traces(
            project.store,
            run.id,
            [
                {
                    "technique": "rag",
                    "question": question,
                    "answer": answer.answer,
                    "trace": [
                        {
                            "citations": answer.citations,
                            "sources": answer.sources,
                            "refused": answer.refused,
                            "relevant": answer.relevant,
                        }
                    ],
                }
            ],
        )
        run.set_summary(
            {"answer": answer.answer, "refused": answer.refused, "citations": [c["citation"] for c in answer.citations]}
        )
    return answer


def reason(
    project,
    question: str,
    *,
    strategy: str | None = None,
    model: str | None = None,
    numeric: bool | None = None,
    collection: str | None = None,
    samples: int | None = None,
    model_obj=None,
):
    """Answer one question with plain, CoT, PAL or ReAct prompting; the trace is stored."""
    import re

    from odyssey.augment.index import Collection
    from odyssey.augment.llm import ChatModel
    from odyssey.augment.react import default_tools
    from odyssey.augment.reasoning import STRATEGIES, solve
    from odyssey.augment.sandbox import SandboxLimits
    from odyssey.store.augment import add_traces

    cfg = project.spec.augment
    strategy = strategy or cfg.strategy
    if strategy not in STRATEGIES:
        raise OdysseyError(f"unknown strategy {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    if not question.strip():
        raise OdysseyError("the question is empty", hint='odyssey reason "A box holds 12 eggs ..." --strategy pal')
    opts = cfg.model_copy(update={"self_consistency": samples}) if samples else cfg
    numeric = bool(re.search(r"\d", question)) if numeric is None else numeric
    coll = Collection.for_project(project, collection, must_exist=True) if collection else None
    tools = None
    if strategy == "react":
        box = cfg.sandbox
        limits = SandboxLimits(timeout_s=box.timeout_s, cpu_s=box.cpu_s, memory_mb=box.memory_mb)
        tools = default_tools(coll, limits, cfg, project.root)
    ref = model or (model_obj.ref if model_obj is not None else project.default_model())
    with project.store.run(
        "augment",
        project.spec.as_dict(),
        {"action": "reason", "strategy": strategy, "model": ref, "question": question},
    ) as run:
        chat = model_obj or ChatModel.load(
            ref, project.root, max_new_tokens=opts.max_new_tokens, evaluate=project.spec.evaluate
        )
        result = solve(chat, [question], strategy, numeric=numeric, options=opts, collection=coll, tools=tools)[0]
        add_traces(
            project.store,
            run.id,
            [
                {
                    "technique": strategy,
                    "question": question,
                    "answer": result.answer,
                    "error": result.error,
                    "trace": {"outputs": result.outputs, "steps": result.trace},
                }
            ],
        )
        run.set_summary({"answer": result.answer, "strategy": result.strategy, "error": result.error})
    return result
