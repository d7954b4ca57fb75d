"""The ``odyssey`` command: a thin Typer layer, one command per stage action, each calling one
entry function of the Python API. Heavy imports (torch, transformers) happen inside commands,
so ``odyssey --help`` stays fast.

Exit codes: 0 ok, 1 internal error (a bug: traceback shown), 2 user error (bad spec or
argument), 3 gates failed (with --check), 4 missing optional dependency, 5 resource unavailable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import EngineOpt, JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit_json, load_project as _load
from odyssey.errors import ExitCode, OdysseyError

app = typer.Typer(
    name="odyssey",
    help="Carry an LLM application through its lifecycle: scope, select, adapt, align, evaluate, optimize, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: Rich's help formatter (and the markdown parser it pulls in) costs ~0.1 s,
    # a third of the start-up budget for `odyssey --help`.
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="show libraries' logs, warnings and progress bars "
            "on stderr (otherwise they go to .odyssey/odyssey.log)",
        ),
    ] = False,
    engine: Annotated[
        Optional[str],
        typer.Option(
            "--engine",
            help="what generates, for every command: auto | "
            "transformers | llamacpp | vllm | openai (default: evaluate.engine)",
        ),
    ] = None,
):
    """Carry an LLM application through its lifecycle: scope, select, adapt, align, evaluate, optimize, deploy."""
    if engine:
        import os

        from odyssey.engines import requested_engine

        os.environ["ODYSSEY_ENGINE"] = requested_engine(engine)  # an unknown name is an error here, at once
    from odyssey.ui import configure_library_output

    configure_library_output(verbose, _log_file(sys.argv[1:]))


def _log_file(argv: list[str]) -> Path | None:
    """The project's .odyssey/odyssey.log (the --project folder, else the current one, if it holds a
    project); None (ODYSSEY_HOME/logs) outside a project."""
    spec_file, state_dir = "odyssey.yaml", ".odyssey"  # odyssey.project's names; importing it costs pydantic
    folder = Path(".")
    for i, arg in enumerate(argv):
        if arg in {"--project", "-p"} and i + 1 < len(argv):
            folder = Path(argv[i + 1])
        elif arg.startswith("--project="):
            folder = Path(arg.split("=", 1)[1])
    if folder.suffix in {".yaml", ".yml"}:
        folder = folder.parent
    return folder / state_dir / "odyssey.log" if (folder / spec_file).is_file() else None


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="folder to create")],
    task: Annotated[str, typer.Option(help="summarization | classification | qa")] = "summarization",
    force: Annotated[bool, typer.Option(help="overwrite an existing odyssey.yaml")] = False,
):
    """Create a project: odyssey.yaml (scope, models, prompt, evaluate filled in; every other section at its
    defaults, commented, one comment per setting) plus example data."""
    from odyssey.scaffold import init_project

    root = init_project(path, task, force=force)
    _console().print(f"created {root / 'odyssey.yaml'} and {root / 'data'}/\nnext: cd {root} && odyssey validate")


@app.command()
def validate(project: ProjectOpt = Path("."), as_json: JsonOpt = False):
    """Check odyssey.yaml, a sample of the data and every model reference: each problem with file, line,
    field, value and a fix hint."""
    from odyssey.project import SPEC_FILE, check_project

    path = project if project.suffix in {".yaml", ".yml"} else project / SPEC_FILE
    spec, report = check_project(path)
    if as_json:
        _emit_json(
            {
                "ok": report.ok,
                "file": str(path),
                "problems": [p.__dict__ for p in report.problems],
                "notes": report.notes,
            }
        )
    elif report.ok:
        console = _console()
        console.print(
            f"[green]ok[/] {path}: {spec.scope.task}, {len(spec.models)} model(s), "
            f"{len(spec.scope.gate_list())} gate(s)"
        )
        for note in report.notes:
            console.print(f"  {note}", markup=False, highlight=False)
    else:
        console = _console()
        console.print(f"[red]{path}: {len(report.problems)} problem(s)[/]")
        for p in report.problems:
            console.print(f"  {p}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.USER_ERROR)


@app.command()
def models(
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
    tiny: Annotated[bool, typer.Option(help="also list the tiny test models")] = False,
):
    """Models available here: family, architecture, parameters, memory for inference and training."""
    from odyssey.models import catalog
    from odyssey.project import SPEC_FILE

    proj = _load(project) if (project / SPEC_FILE).exists() else None
    infos = catalog(proj, include_tiny=tiny)
    if as_json:
        _emit_json({"models": [i.as_dict() for i in infos]})
        return
    from odyssey.render import models_table

    _console().print(models_table(infos))


@app.command()
def prompt(
    project: ProjectOpt = Path("."),
    model: Annotated[Optional[str], typer.Option(help="model reference (default: first in models:)")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="validation examples per variant")] = None,
    test_limit: Annotated[Optional[int], typer.Option(min=1, help="test examples for the best variant")] = None,
    shots: Annotated[Optional[str], typer.Option(help="comma-separated shot counts, e.g. 0,1,3")] = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
):
    """Search zero/one/few-shot prompts on validation; keep the best as a candidate; report it on test."""
    shot_list = _shot_counts(shots) if shots else None
    proj = _load(project)
    result = proj.prompt(model=model, limit=limit, test_limit=test_limit, shots=shot_list, engine=engine)
    if as_json:
        _emit_json(result.as_dict())
        return
    from odyssey.render import gates_table, metrics_table, print_tables, variants_table

    console = _console()
    print_tables(
        console,
        variants_table(result),
        metrics_table(result.test_metrics, f"{result.candidate} on test"),
        gates_table(result.gates),
    )
    console.print(f"report: {result.report['markdown']}")


def _shot_counts(text: str) -> list[int]:
    """``--shots 0,1,3`` as numbers; anything else is a usage error, not a traceback."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(not 0 <= n <= 16 for n in counts):
        raise OdysseyError(
            f"--shots {text!r} is not a list of shot counts",
            hint="comma-separated whole numbers from 0 to 16, e.g. --shots 0,1,3",
        )
    return counts


@app.command("eval")
def eval_(
    project: ProjectOpt = Path("."),
    model: Annotated[Optional[str], typer.Option(help="model reference to evaluate zero-shot")] = None,
    candidate: Annotated[Optional[str], typer.Option(help="a stored candidate (see odyssey status)")] = None,
    split: Annotated[str, typer.Option(help="train | validation | test")] = "test",
    limit: Annotated[Optional[int], typer.Option(min=1, help="evaluate the first N examples")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="generation batch size")] = None,
    check: Annotated[bool, typer.Option(help="exit with code 3 when a gate fails")] = False,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
):
    """Evaluate a model or candidate (default: the board's best) with the harness: metrics, gates,
    output checks, per-example outputs, report."""
    proj = _load(project)
    result = proj.evaluate(
        model=model, split=split, candidate=candidate, limit=limit, batch_size=batch_size, engine=engine
    )
    if as_json:
        _emit_json(result.as_dict())
    else:
        from odyssey.render import gates_table, metrics_table, print_tables

        console = _console()
        print_tables(
            console, metrics_table(result.metrics, f"{result.candidate} on {split}"), gates_table(result.gates)
        )
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print(f"report: {result.report['markdown']}")
    if check and not result.passed:
        raise typer.Exit(ExitCode.GATES_FAILED)


@app.command()
def status(project: ProjectOpt = Path("."), as_json: JsonOpt = False):
    """The board: lifecycle stages, candidates, metrics against the gates."""
    board = _load(project).status()
    if as_json:
        _emit_json(board.as_dict())
        return
    from odyssey.render import board_tables, print_tables

    print_tables(_console(), *board_tables(board))


@app.command()
def demo(
    path: Annotated[Optional[Path], typer.Argument(help="folder for the demo project (default: a temp folder)")] = None,
    model: Annotated[str, typer.Option(help="model to run the lifecycle on")] = "packaged:smollm2-135m-instruct",
    quick: Annotated[bool, typer.Option(help="fewer examples (a smoke test)")] = False,
):
    """Run the whole lifecycle on the shipped example data and packaged model, ending with the board."""
    from odyssey.demo import run_demo

    run_demo(path, model=model, quick=quick)


# Each stage adds its commands in odyssey/<stage>/cli.py with a ``register(app)`` function. Those
# modules import only typer at module level (``odyssey --help`` must stay fast); the work is
# imported inside each command.
STAGE_CLIS = (
    "select",
    "adapt",
    "align",
    "optimize",
    "deploy",
    "deploy.export_formats",
    "augment",
    "pipeline",
    "tracking",
    "tune",
)


def _register_stage_commands() -> None:
    import importlib
    import importlib.util

    for stage in STAGE_CLIS:
        name = f"odyssey.{stage}.cli"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(app)


_register_stage_commands()


def main() -> None:
    """Entry point: user errors print a message and a hint, never a traceback."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code instead of raising here
        if isinstance(code, int) and code:
            sys.exit(code)
    except OdysseyError as exc:
        from rich.console import Console

        console = Console(stderr=True)
        console.print("[red]error:[/]", end=" ")
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown option, bad value) are click exceptions; typer vendors click, so
        # they are recognised by their interface rather than their class.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(ExitCode.USER_ERROR)
        raise


if __name__ == "__main__":
    main()
