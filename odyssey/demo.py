"""``odyssey demo``: the whole lifecycle, as far as it is built, on the shipped example data and
the packaged model, on a laptop CPU. Each later stage adds its step here."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from odyssey import ui

DEMO_STAGES = ("select", "adapt", "align", "optimize", "deploy", "augment")


def _stage_step(stage: str):
    import importlib
    import importlib.util

    name = f"odyssey.{stage}.demo"
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name).demo_step


def run_demo(path: Path | None = None, *, model: str = "packaged:smollm2-135m-instruct", quick: bool = False):
    from rich.rule import Rule

    from odyssey.models import catalog
    from odyssey.project import Project, check_spec_file
    from odyssey.render import (
        board_tables,
        gates_table,
        make_console,
        metrics_table,
        models_table,
        print_tables,
        variants_table,
    )
    from odyssey.scaffold import init_project

    console = make_console()
    started = time.perf_counter()
    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="odyssey-demo-"))
    spec_exists = (root / "odyssey.yaml").exists()

    console.print(Rule("1. scope: odyssey init + validate"))
    if not spec_exists:
        init_project(root, "summarization")
    _, report = check_spec_file(root / "odyssey.yaml")
    console.print(f"project at {root}: " + ("[green]spec ok[/]" if report.ok else "[red]spec has problems[/]"))
    project = Project.load(root)
    if model != project.default_model():
        project.spec.models.insert(0, model)

    console.print(Rule("2. select: odyssey models"))
    console.print(models_table(catalog(project)))

    console.print(Rule("3. adapt: odyssey prompt (in-context learning)"))
    limits = {"limit": 4, "test_limit": 4, "shots": [0, 1]} if quick else {}
    result = project.prompt(model=model, **limits)
    print_tables(console, variants_table(result))

    console.print(Rule("4. evaluate: odyssey eval (zero-shot baseline on test)"))
    evaluation = project.evaluate(model=model, split="test", limit=4 if quick else None)
    print_tables(
        console, metrics_table(evaluation.metrics, f"{evaluation.candidate} on test"), gates_table(evaluation.gates)
    )

    # Later stages plug in here: odyssey/<stage>/demo.py defines demo_step(project, console, model, quick),
    # run in lifecycle order. Each prints its own heading.
    for stage in DEMO_STAGES:
        step = _stage_step(stage)
        if step is not None:
            step(project, console, model=model, quick=quick)

    console.print(Rule("status: the board"))
    print_tables(console, *board_tables(project.status()))
    console.print(f"reports: {result.report['markdown']}\n         {evaluation.report['markdown']}")
    ui.say(f"demo finished in {time.perf_counter() - started:.0f} s; project kept at {root}")
    return root
