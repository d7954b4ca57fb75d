"""CLI: ``odyssey tune [--trials N]``. Imports only typer at module level (``odyssey --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import EngineOpt, JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load


def trials_table(result):
    """Every trial of the study: state, settings, the objective on validation, the candidate and its test score."""
    from rich.table import Table

    table = Table(title=f"study {result.study}: {result.metric} on validation ({result.method})")
    for column in ("trial", "state", "settings", f"{result.metric} val", "test", "candidate"):
        table.add_column(column, justify="right" if column in {"trial", "test"} or column.endswith("val") else "left")
    for t in result.trials:
        mark = " *" if t.number == result.best_trial else ""
        settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        table.add_row(
            f"{t.number}{mark}",
            t.state.lower(),
            settings,
            "" if t.value is None else f"{t.value:.4f}",
            "" if t.test_value is None else f"{t.test_value:.4f}",
            t.candidate or "",
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune(
        project: ProjectOpt = Path("."),
        trials: Annotated[
            Optional[int],
            typer.Option(
                min=1,
                help="the study's size, counting trials an earlier, interrupted search finished (default: tune.trials)",
            ),
        ] = None,
        method: Annotated[
            Optional[str], typer.Option(help="full | lora | prompt_tuning (default: tune.method, else adapt.method)")
        ] = None,
        model: Annotated[
            Optional[str], typer.Option(help="base model (default: adapt.model / the prompt model)")
        ] = None,
        max_steps: Annotated[Optional[int], typer.Option(min=1, help="optimizer steps per trial")] = None,
        limit: Annotated[Optional[int], typer.Option(min=1, help="evaluate each trial on the first N examples")] = None,
        engine: EngineOpt = None,
        as_json: JsonOpt = False,
    ):
        """Search fine-tuning settings with Optuna (tune.space in odyssey.yaml): each trial a candidate on the
        board, scored by the primary metric on validation, bad ones pruned from their validation loss; the
        study lives in .odyssey/tune/, so an interrupted search resumes."""
        from odyssey.tune import tune as run_tune

        if method is not None and method not in {"full", "lora", "prompt_tuning"}:
            from odyssey.errors import OdysseyError

            raise OdysseyError(f"--method {method!r} is not a fine-tuning method", hint="full, lora or prompt_tuning")
        result = run_tune(
            _load(project), trials=trials, method=method, model=model, max_steps=max_steps, limit=limit, engine=engine
        )
        if as_json:
            _emit(result.as_dict())
            return
        console = _console()
        console.print(trials_table(result))
        for note in result.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        console.print(
            f"best trial: {result.best_trial} ({result.best_candidate}); the board's best: {result.board_best}",
            markup=False,
            highlight=False,
        )
