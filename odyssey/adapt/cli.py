"""CLI for fine-tuning: ``odyssey finetune [--method full|lora|prompt_tuning] [--resume]`` and
``odyssey finetune merge``. Imports only typer and the standard library at module level
(``odyssey --help`` must stay fast); the work is imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import EngineOpt, JsonOpt, ProjectOpt
from odyssey.cli_support import emit_json as _emit, load_project as _load

METHODS = ("full", "lora", "prompt_tuning")


def result_table(result):
    """A small table of a fine-tuning result (shared with the demo)."""
    from rich.table import Table

    table = Table(title=f"{result.candidate} (parent: {result.parent or '-'})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(
        "trainable parameters", f"{result.trainable_params:,} of {result.total_params:,} ({result.trainable_pct:.3f}%)"
    )
    table.add_row("steps / tokens", f"{result.steps} / {result.tokens:,}")
    table.add_row("throughput", f"{result.tokens_per_s:,.0f} tok/s in {result.wall_s:.1f} s")
    table.add_row(
        "memory: estimate / measured peak", f"{result.memory_estimate_gb:.2f} / {result.peak_memory_gb:.2f} GB"
    )
    before, after = result.val_loss.get("before"), result.val_loss.get("after")
    if before is not None:
        table.add_row("validation loss before -> after", f"{before:.3f} -> {after:.3f}")
    for split, metrics in result.metrics.items():
        shown = {
            k: v for k, v in metrics.items() if k.startswith("rouge") or k in {"accuracy", "f1", "exact_match", "bleu"}
        }
        table.add_row(f"{split}", "  ".join(f"{k}={v:.3f}" for k, v in shown.items()))
    if result.forgetting:
        f = result.forgetting
        table.add_row(
            "general-set loss (forgetting)", f"{f['general_loss_before']:.3f} -> {f['general_loss_after']:.3f}"
        )
    if result.resumed_from is not None:
        table.add_row("resumed from step", str(result.resumed_from))
    return table


def finetune_cmd(
    ctx: typer.Context,
    method: Annotated[Optional[str], typer.Option(help="full | lora | prompt_tuning (default: adapt.method)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the interrupted run from its last checkpoint")] = False,
    model: Annotated[
        Optional[str], typer.Option(help="base model ref (default: adapt.model / the prompt model)")
    ] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps (overrides epochs)")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="passes over the training data")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="evaluate on the first N examples of each split")] = None,
    evaluate: Annotated[bool, typer.Option(help="score the new candidate with the harness afterwards")] = True,
    engine: EngineOpt = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Fine-tune the base model on the train split; evaluate on validation and test; record the candidate."""
    import os

    from odyssey.adapt.finetune_stage import finetune as run
    from odyssey.errors import OdysseyError

    if ctx.invoked_subcommand is not None:
        return
    if method is not None and method not in METHODS:
        raise OdysseyError(f"--method {method!r} is not a fine-tuning method", hint=f"use one of {', '.join(METHODS)}")
    if max_steps is not None and max_steps < 1:
        raise OdysseyError(f"--max-steps {max_steps} must be at least 1")
    result = run(
        _load(project),
        method=method,
        resume=resume,
        model=model,
        max_steps=max_steps,
        epochs=epochs,
        evaluate=evaluate,
        limit=limit,
        engine=engine,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun / accelerate launch, the first process reports
    if as_json:
        _emit(result.as_dict())
        return
    _print_result(result)


def _print_result(result) -> None:
    from odyssey.render import gates_table, make_console, print_tables

    console = make_console()
    tables = [result_table(result)] + ([gates_table(result.gates)] if result.gates else [])
    print_tables(console, *tables)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"model: {result.model_ref}")


def merge_cmd(
    candidate: Annotated[Optional[str], typer.Option(help="LoRA candidate to merge (default: the latest)")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Fold a LoRA adapter into its base weights: a standalone checkpoint, recorded as a candidate."""
    from odyssey.adapt.finetune_stage import merge as run
    from odyssey.render import make_console

    result = run(_load(project), candidate)
    if as_json:
        _emit(result.as_dict())
        return
    make_console().print(
        f"merged {result.parent} -> candidate {result.candidate} at {result.model_ref}\n"
        f"next: odyssey eval --candidate {result.candidate}"
    )


def register(app: typer.Typer) -> None:
    finetune_app = typer.Typer(
        help="Instruction fine-tuning: full, LoRA or prompt tuning; then evaluate and record the candidate.",
        invoke_without_command=True,
    )
    app.add_typer(finetune_app, name="finetune")
    finetune_app.callback()(finetune_cmd)
    finetune_app.command("merge")(merge_cmd)
