"""``odyssey select | plan | benchmark | data curate | pretrain``. Only typer and the stdlib at module level:
``odyssey --help`` imports this file; the work is imported inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import EngineOpt, JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit

OBJECTIVES = ("clm", "mlm", "span")  # odyssey.spec.PretrainSpec.objective (importing spec costs pydantic here)


def _project(path: Path, required: bool = True):
    from odyssey.project import SPEC_FILE, Project

    if not required and not (path / SPEC_FILE).exists():
        return None
    return Project.load(path)


def select_cmd(
    project: ProjectOpt = Path("."),
    limit: Annotated[Optional[int], typer.Option(min=1, help="examples per candidate (default: select.limit)")] = None,
    split: Annotated[Optional[str], typer.Option(help="validation | test (default: select.split)")] = None,
    model: Annotated[Optional[list[str]], typer.Option(help="candidate(s) instead of models: (repeatable)")] = None,
    hub: Annotated[Optional[str], typer.Option(help="also search the hub for this text (online only)")] = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
):
    """Zero-shot comparison of every candidate in models:, ranked against the gates; the choice is stored."""
    from odyssey.select import select_models
    from odyssey.select.catalog import hub_search

    proj = _project(project)
    result = select_models(proj, limit=limit, split=split, models=model, engine=engine)
    query = hub or proj.spec.select.hub_search
    search = hub_search(query) if query else None
    if as_json:
        _emit({**result.as_dict(), "hub": search.as_dict() if search else None})
        return
    from odyssey.render import selection_table

    console = _console()
    console.print(selection_table(result))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if search:
        console.print(f"hub search {search.query!r}: " + (search.note or ", ".join(h.id for h in search.hits)))
    console.print(f"chosen: [bold]{result.chosen or 'none'}[/] (recorded in run {result.run_id})")


def plan_cmd(
    model: Annotated[str, typer.Option(help="model reference, e.g. packaged:smollm2-135m-instruct")],
    method: Annotated[str, typer.Option(help="inference | lora | full")] = "lora",
    hardware: Annotated[
        str, typer.Option(help="'auto' or e.g. 'cpu:2,ram:24gb', 'gpu:1,vram:24gb,tflops:312'")
    ] = "auto",
    batch: Annotated[int, typer.Option(help="sequences per step")] = 8,
    seq: Annotated[int, typer.Option(help="tokens per sequence (prompt + output for inference)")] = 512,
    tokens: Annotated[
        Optional[float],
        typer.Option(
            help="tokens to train on / generate (default: a fine-tune's train split × adapt.epochs; pretraining: 20 per parameter)"
        ),
    ] = None,
    precision: Annotated[
        Optional[str], typer.Option(help="fp32 | bf16 | fp16 | int8 | int4 (default: fp32 on CPU)")
    ] = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (adapt.lora.r's default)")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout (adapt.lora.dropout's default)")] = 0.05,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Will it fit? Memory by component, expected tokens/s, hours for N tokens, the cheapest method that fits."""
    from odyssey.select.planner import plan

    proj = _project(project, required=False)
    result = plan(
        model,
        method,
        hardware,
        batch=batch,
        seq=seq,
        tokens=int(tokens) if tokens else None,
        precision=precision,
        lora_r=lora_r,
        lora_dropout=lora_dropout,
        root=proj.root if proj else None,
    )
    if as_json:
        _emit(result.as_dict())
        return
    from odyssey.render import plan_tables, print_tables

    console = _console()
    print_tables(console, *plan_tables(result, f"{model}: {method} ({result.precision}, batch {batch} x {seq} tokens)"))
    verdict = "[green]fits[/]" if result.fits else "[red]does not fit[/]"
    console.print(
        f"{verdict}; ~{result.tokens_per_s:,.1f} tokens/s -> {result.hours:,.2f} h for "
        f"{result.tokens:,} tokens (compute-optimal: {result.compute_optimal_tokens:,}); "
        f"cheapest method that fits: {result.cheapest_fit or 'none'}"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


def curate_cmd(
    corpus: Annotated[Path, typer.Argument(help="folder of .txt/.jsonl files, or one file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for clean.jsonl and the report")],
    threshold: Annotated[Optional[float], typer.Option(help="near-duplicate Jaccard threshold")] = None,
    min_words: Annotated[Optional[int], typer.Option(min=0, help="drop documents with fewer words")] = None,
    no_pii: Annotated[bool, typer.Option("--no-pii", help="keep e-mails and phone numbers")] = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Exact and near-duplicate removal, quality filters, PII scrubbing; a report of what was dropped and why."""
    from odyssey.select.curation import curate
    from odyssey.spec import CurateSpec

    proj = _project(project, required=False)
    cfg = proj.spec.select.curate.model_copy() if proj else CurateSpec()
    if threshold is not None:
        cfg.near_dup_threshold = threshold
    if min_words is not None:
        cfg.min_words = min_words
    if no_pii:
        cfg.scrub_pii = False
    report = curate(corpus, out, cfg)
    if as_json:
        _emit(report.as_dict())
        return
    from odyssey.render import curation_table

    console = _console()
    console.print(curation_table(report))
    console.print(
        f"PII scrubbed: {report.pii}; clean corpus: {Path(report.out) / 'clean.jsonl'}; "
        f"report: {Path(report.out) / 'report.md'}"
    )


def benchmark_cmd(
    tasks: Annotated[
        str,
        typer.Option(help="comma-separated: local:mini-mmlu, local:boolq-mini, local:capitals, or lm-eval task names"),
    ] = "",
    model: Annotated[Optional[str], typer.Option(help="model reference (default: first in models:)")] = None,
    candidate: Annotated[Optional[str], typer.Option(help="a stored candidate")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="examples per task")] = None,
    batch_size: Annotated[int, typer.Option(help="lm-eval batch size")] = 8,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """lm-evaluation-harness tasks against a model or candidate through Odyssey's model loader."""
    from odyssey.select.benchmarks import run_benchmarks

    proj = _project(project, required=False)
    names = [t.strip() for t in tasks.split(",") if t.strip()] or (
        proj.spec.select.benchmarks if proj else ["local:mini-mmlu", "local:boolq-mini"]
    )
    result = run_benchmarks(names, model=model, candidate=candidate, project=proj, limit=limit, batch_size=batch_size)
    if as_json:
        _emit(result.as_dict())
        return
    from odyssey.render import benchmark_table

    _console().print(benchmark_table(result))


def pretrain_cmd(
    objective: Annotated[
        Optional[str], typer.Option(help="clm (decoder) | mlm (encoder) | span (encoder-decoder)")
    ] = None,
    size: Annotated[Optional[str], typer.Option(help="preset: tiny, mini, small, 125m, 350m, 1b")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="text folder/file (default: the shipped corpus)")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="optimizer steps")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="continue pretraining this model instead")] = None,
    name: Annotated[Optional[str], typer.Option(help="candidate name")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Pretrain from scratch (tokenizer, model from a preset, training, eval) and record a candidate."""
    from odyssey.errors import OdysseyError
    from odyssey.select.pretraining import pretrain

    if objective is not None and objective not in OBJECTIVES:
        raise OdysseyError(
            f"--objective {objective!r} is not a pretraining objective", hint=f"use one of {', '.join(OBJECTIVES)}"
        )
    proj = _project(project)
    overrides = {
        k: v
        for k, v in {
            "objective": objective,
            "size": size,
            "corpus": str(corpus) if corpus else None,
            "steps": steps,
            "init_from": init_from,
        }.items()
        if v is not None
    }
    result = pretrain(proj, name=name, resume=resume, **overrides)
    if as_json:
        _emit(result.as_dict())
        return
    from odyssey.render import pretrain_table

    console = _console()
    console.print(pretrain_table(result))
    console.print(f"sample: {result.sample!r}")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Data for pretraining: curate a corpus (dedup, quality filters, PII).", no_args_is_help=True
    )
    app.add_typer(data_app, name="data")
    app.command("select")(select_cmd)
    app.command("plan")(plan_cmd)
    data_app.command("curate")(curate_cmd)
    app.command("benchmark")(benchmark_cmd)
    app.command("pretrain")(pretrain_cmd)
