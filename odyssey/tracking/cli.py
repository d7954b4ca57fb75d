"""CLI for experiment tracking: ``odyssey track export [--uri URI]`` (the store's runs and board to MLflow).

Named ``track export`` rather than ``export mlflow``: ``odyssey export CANDIDATE --format ...`` is the
model export (odyssey/deploy). Imports only typer at module level (``odyssey --help`` must stay fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load


def register(app: typer.Typer) -> None:
    track = typer.Typer(
        help="Experiment tracking: copy the store's runs to MLflow (live tracking is tracking: in odyssey.yaml).",
        no_args_is_help=True,
    )
    app.add_typer(track, name="track")

    @track.command("export")
    def export(
        project: ProjectOpt = Path("."),
        uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default: tracking.mlflow.uri)")] = None,
        experiment: Annotated[
            Optional[str], typer.Option(help="MLflow experiment (default: the project's name)")
        ] = None,
        as_json: JsonOpt = False,
    ):
        """Copy every run in the store to MLflow (params, metrics, artifacts, lineage tags) and the board as a
        run of its own; runs copied before are skipped, so it can run again at any time."""
        from odyssey.tracking.export import export_mlflow

        result = export_mlflow(_load(project), uri=uri, experiment=experiment)
        if as_json:
            _emit(result.as_dict())
            return
        console = _console()
        console.print(
            f"MLflow {result.uri}, experiment {result.experiment!r}: {len(result.exported)} run(s) copied, "
            f"{len(result.replaced)} partial copies replaced, {len(result.skipped)} copied before; "
            f"board {result.board}",
            markup=False,
            highlight=False,
        )
        if result.running:
            console.print(
                f"still running, not copied yet: runs {', '.join(map(str, result.running))}",
                markup=False,
                highlight=False,
            )
