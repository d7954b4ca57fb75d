"""``odyssey demo``: ``odyssey run --profile demo`` on the example project, with the packaged model, on a
laptop CPU. It ends with a fine-tuned candidate that beats the model zero-shot on the shipped test split,
and says by how much, with a paired bootstrap interval.

Around the run: the select stage's model table before it, and after it the two stages a pipeline does not
run, each from its ``odyssey/<stage>/demo.py``: deploy (serve the best candidate, call it with the
``openai`` client, capture feedback) and augment (RAG and PAL). Every part prints its time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from odyssey import ui

AFTER_RUN = ("deploy", "augment")  # stages outside the pipeline, shown on the run's best candidate


def _stage_step(stage: str):
    import importlib

    return importlib.import_module(f"odyssey.{stage}.demo").demo_step


def run_demo(path: Path | None = None, *, model: str = "packaged:smollm2-135m-instruct", quick: bool = False):
    from rich.rule import Rule

    from odyssey.models import catalog
    from odyssey.pipeline import run_pipeline
    from odyssey.pipeline.report import print_result
    from odyssey.project import Project, check_spec_file
    from odyssey.render import make_console, models_table
    from odyssey.scaffold import init_project

    console = make_console()
    started = time.perf_counter()
    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="odyssey-demo-"))
    if not (root / "odyssey.yaml").exists():
        init_project(root, "summarization")
    _, report = check_spec_file(root / "odyssey.yaml")
    console.print(Rule("scope: odyssey init + validate"))
    console.print(f"project at {root}: " + ("[green]spec ok[/]" if report.ok else "[red]spec has problems[/]"))
    project = Project.load(root)
    if model != project.default_model():
        project.spec.models.insert(0, model)
    console.print(Rule("select: odyssey models"))
    console.print(models_table(catalog(project)))

    profile = "quick" if quick else "demo"
    console.print(Rule(f"odyssey run --profile {profile}: prompt, finetune, align, optimize, evaluate"))
    result = run_pipeline(project, profile=profile)
    print_result(console, result)
    times = {s.step: s.wall_s for s in result.steps if s.wall_s is not None}

    for stage in AFTER_RUN:
        t0 = time.perf_counter()
        _stage_step(stage)(project, console, model=model, quick=quick)
        times[stage] = time.perf_counter() - t0
        console.print(f"[dim]{stage}: {times[stage]:.0f} s[/]")

    console.print(Rule("what the lifecycle bought"))
    console.print(verdict(result.gains))
    console.print("time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    ui.say(f"demo finished in {time.perf_counter() - started:.0f} s; project kept at {root}")
    return root


def verdict(gains: list[dict]) -> str:
    """One sentence: the run's best candidate against the model zero-shot, and whether the interval says
    the difference is real."""
    whole = next((g for g in gains if g["stage"] == "whole run"), None)
    whole = whole or next((g for g in gains if g["parent"].endswith(":zero-shot")), None)
    if whole is None:
        return "no candidate was scored beside the model zero-shot on the test split"
    if whole["low"] > 0:
        word = "beats"
    elif whole["high"] < 0:
        word = "is worse than"
    else:
        word = "is not distinguishable from"
    return (
        f"{whole['candidate']} {word} {whole['parent']} on the test split: {whole['metric']} "
        f"{whole['gain']:+.4f} over {whole['n']} examples (paired bootstrap 95 % interval "
        f"[{whole['low']:+.4f}, {whole['high']:+.4f}])"
    )
