"""CLI for the augment stage: ``odyssey rag ingest|ask|search|list``, ``odyssey reason`` and
``odyssey augment eval|traces``. Imports only typer and the standard library at module level
(``odyssey --help`` must stay fast); the work is imported inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load

CollectionOpt = Annotated[
    Optional[str], typer.Option("--collection", "-c", help="collection name (default: augment.collection)")
]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="model reference (default: first in models:)")]


def _table(title: str, columns: list[str], rows: list[list]):  # rich is imported on use, not with the CLI
    from odyssey.render import plain_table

    return plain_table(title, columns, rows)


def rag_ingest(
    paths: Annotated[
        Optional[list[Path]], typer.Argument(help="files or folders (.md .txt .html .pdf); default augment.documents")
    ] = None,
    collection: CollectionOpt = None,
    rebuild: Annotated[bool, typer.Option(help="drop the collection and embed everything again")] = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Chunk, embed and index documents; re-running touches only changed files, deletions propagate."""
    from odyssey.augment.api import ingest
    from odyssey.urls import refuse_url

    for p in paths or []:  # before resolve(), which would make a URL a path under the shell's folder
        refuse_url(str(p), "odyssey rag ingest", "odyssey rag ingest")
    # Paths typed on the command line are relative to the shell's directory; the API reads
    # relative paths (augment.documents, Python callers) against the project folder.
    given = [p.resolve() for p in paths] if paths else None
    report = ingest(_load(project), given, collection=collection, rebuild=rebuild)
    if as_json:
        _emit(report.as_dict())
        return
    rows = [
        [
            kind,
            len(getattr(report, kind)),
            ", ".join(getattr(report, kind)[:6]) + (" ..." if len(getattr(report, kind)) > 6 else ""),
        ]
        for kind in ("added", "updated", "removed", "unchanged")
    ]
    console = _console()
    console.print(
        _table(
            f"collection {report.collection}: {report.total_chunks} chunks "
            f"(+{report.chunks_added} -{report.chunks_removed}) in {report.seconds:.1f} s",
            ["files", "n", "which"],
            rows,
        )
    )


def rag_ask(
    question: Annotated[str, typer.Argument(help="the question")],
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    k: Annotated[Optional[int], typer.Option("--k", help="chunks in the prompt (default augment.top_k)")] = None,
    mode: Annotated[Optional[str], typer.Option(help="hybrid | vector | bm25")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Answer from the documents with cited sources, or say it is not in the documents."""
    from odyssey.augment.api import ask

    answer = ask(_load(project), question, collection=collection, model=model, k=k, mode=mode)
    if as_json:
        _emit(answer.as_dict())
        return
    console = _console()
    console.print(answer.answer, markup=False, highlight=False, soft_wrap=True)
    shown = answer.citations or answer.sources
    if shown:
        label = "cited" if answer.citations else "retrieved" if answer.relevant else "retrieved (below min_similarity)"
        console.print(
            _table(
                f"sources ({label})",
                ["#", "source", "similarity"],
                [[c.get("n", i + 1), c["citation"], c["similarity"]] for i, c in enumerate(shown)],
            )
        )


def rag_search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    collection: CollectionOpt = None,
    k: Annotated[Optional[int], typer.Option("--k", help="how many chunks")] = None,
    mode: Annotated[Optional[str], typer.Option(help="hybrid | vector | bm25")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Retrieval only (no model): the chunks a question would get, with their scores."""
    from odyssey.augment.api import search

    hits = search(_load(project), query, collection=collection, k=k, mode=mode)
    if as_json:
        _emit([h.as_dict() for h in hits])
        return
    _console().print(
        _table(
            f"top {len(hits)} for {query!r}",
            ["#", "source", "similarity", "rrf", "text"],
            [[i + 1, h.citation, h.similarity, h.score, " ".join(h.text.split()[:30])] for i, h in enumerate(hits)],
        )
    )


def rag_list(project: ProjectOpt = Path("."), as_json: JsonOpt = False):
    """Collections of this project."""
    from odyssey.augment.index import list_collections

    rows = list_collections(_load(project))
    if as_json:
        _emit(rows)
        return
    _console().print(
        _table(
            "collections",
            ["name", "files", "chunks", "embedder"],
            [[r["name"], r["files"], r["chunks"], r["embedder"]] for r in rows],
        )
    )


def reason_cmd(
    question: Annotated[str, typer.Argument(help="the question")],
    strategy: Annotated[
        Optional[str], typer.Option(help="plain | cot | cot-fewshot | pal | react (default augment.strategy)")
    ] = None,
    samples: Annotated[Optional[int], typer.Option(help="self-consistency: CoT samples to vote over")] = None,
    answer: Annotated[str, typer.Option(help="number | text | auto (number when the question has digits)")] = "auto",
    collection: Annotated[
        Optional[str], typer.Option("--collection", "-c", help="give ReAct a retrieve tool over this collection")
    ] = None,
    model: ModelOpt = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Answer one question with chain-of-thought, a sandboxed program (PAL) or a ReAct agent; show the trace."""
    from odyssey.augment.api import reason
    from odyssey.errors import OdysseyError

    if answer not in {"number", "text", "auto"}:
        raise OdysseyError(f"--answer {answer!r} is not one of number, text, auto")
    numeric = None if answer == "auto" else answer == "number"
    result = reason(
        _load(project),
        question,
        strategy=strategy,
        model=model,
        numeric=numeric,
        collection=collection,
        samples=samples,
    )
    if as_json:
        _emit(result.as_dict())
        return
    console = _console()
    for step in result.trace:
        if "program" in step:
            console.print("[bold]program[/]")
            console.print(step["program"], markup=False, highlight=False)
            console.print(f"[bold]sandbox[/]: ok={step['ok']} value={step['value']!r} error={step['error']}")
        elif "step" in step:
            console.print(f"[bold]step {step['step']}[/] thought: {step['thought']}", highlight=False)
            if step["action"]:
                console.print(f"  action: {step['action']}[{step['input']}]", markup=False, highlight=False)
            else:
                console.print(f"  (no action in the reply) {step['raw'][:200]!r}", markup=False, highlight=False)
            if step.get("observation") is not None:
                console.print(f"  observation: {step['observation']}", markup=False, highlight=False)
        elif "fallback" in step:
            console.print(f"[yellow]fallback to {step['fallback']}[/]: {step['output']}", highlight=False)
        elif "sample" in step:
            console.print(f"sample {step['sample']}: {step['answer']}")
    if result.strategy.startswith("cot") or result.strategy == "plain":
        for out in result.outputs[:1]:
            console.print(out, markup=False, highlight=False, soft_wrap=True)
    if result.error:
        console.print(f"[yellow]note:[/] {result.error}")
    console.print(f"[bold]answer ({result.strategy}):[/] {result.answer}")


def augment_eval(
    technique: Annotated[
        str, typer.Option("--technique", "-t", help="plain | rag | cot | cot-fewshot | pal | react")
    ] = "rag",
    dataset: Annotated[str, typer.Option(help="grounded-qa | arithmetic | project | auto")] = "auto",
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="first N questions only")] = None,
    batch_size: Annotated[int, typer.Option(help="generation batch size")] = 8,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Score an augmented pipeline as candidate <model>:<technique> (shipped sets or the project's test split)."""
    from odyssey.augment.evaluate import evaluate_augmented

    result = evaluate_augmented(
        _load(project), technique, dataset, model=model, collection=collection, limit=limit, batch_size=batch_size
    )
    if as_json:
        _emit(result.as_dict())
        return
    _console().print(
        _table(
            f"{result.candidate} on {result.dataset} (n={result.n}, run {result.run_id})",
            ["metric", "value"],
            [[k, v] for k, v in result.metrics.items()],
        )
    )


def augment_traces(
    run: Annotated[Optional[int], typer.Option(help="run id (default: the latest traces of the project)")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 10,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Stored traces of augmented answers: question, answer, correctness, steps."""
    from odyssey.store.augment import latest_traces, traces

    proj = _load(project)
    rows = traces(proj.store, run)[:limit] if run else latest_traces(proj.store, limit)
    if as_json:
        _emit(rows)
        return
    _console().print(
        _table(
            "traces",
            ["run", "example", "technique", "question", "answer", "correct"],
            [
                [r["run_id"], r["example_id"], r["technique"], r["question"][:60], r["answer"], r["correct"]]
                for r in rows
            ],
        )
    )


def register(app: typer.Typer) -> None:
    rag_app = typer.Typer(
        help="Retrieval-augmented generation: ingest documents, ask with cited sources.", no_args_is_help=True
    )
    aug_app = typer.Typer(
        help="Augmented pipelines: evaluate RAG / CoT / PAL / ReAct like candidates; traces.", no_args_is_help=True
    )
    app.add_typer(rag_app, name="rag")
    app.add_typer(aug_app, name="augment")
    rag_app.command("ingest")(rag_ingest)
    rag_app.command("ask")(rag_ask)
    rag_app.command("search")(rag_search)
    rag_app.command("list")(rag_list)
    app.command("reason")(reason_cmd)
    aug_app.command("eval")(augment_eval)
    aug_app.command("traces")(augment_traces)
