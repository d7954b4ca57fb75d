"""CLI: ``odyssey run [--profile demo|quick|full] [--from STEP | --only STEP] [--dry-run]``. Imports only
typer and the standard library at module level (``odyssey --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load

ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="project folder (holds odyssey.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON object on stdout instead of tables")]


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        project: ProjectOpt = Path("."),
        profile: Annotated[
            Optional[str],
            typer.Option(
                help="demo | quick | full, or one under profiles: in odyssey.yaml (sizes: steps, rows, limits)"
            ),
        ] = None,
        from_step: Annotated[
            Optional[str], typer.Option("--from", help="run this step and every one after it, cached or not")
        ] = None,
        only: Annotated[Optional[str], typer.Option(help="run only this step, cached or not")] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="print the plan: each step, cached or not, and the planner's time and memory for training steps",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ):
        """Run the lifecycle odyssey.yaml describes (pipeline:, or scope, prompt, finetune, align, optimize,
        evaluate): unchanged steps are cached, an interrupted one resumes; ends with the board and gains."""
        from odyssey.errors import OdysseyError

        if from_step and only:
            raise OdysseyError("--from and --only cannot be used together", hint="pick one")
        from odyssey.pipeline import run_pipeline

        result = run_pipeline(_load(project), profile=profile, from_step=from_step, only=only, dry_run=dry_run)
        if as_json:
            _emit(result.as_dict())
            return
        from odyssey.pipeline.report import print_result

        print_result(_console(), result)
