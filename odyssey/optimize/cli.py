"""``odyssey optimize quantize | distill | prune | report | tools``. Only typer and the stdlib at
module level: ``odyssey --help`` imports this file; the work is imported inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit

FromOpt = Annotated[
    Optional[str], typer.Option("--from", help="candidate name, 'best', or a model ref (default: optimize.start_from)")
]
NoMeasureOpt = Annotated[bool, typer.Option("--no-measure", help="skip measuring it beside its parent")]


def _project(path: Path):
    from odyssey.project import Project

    return Project.load(path)


def _show(result, title: str) -> None:
    from odyssey.optimize.reporting import comparison_table

    console = _console()
    console.print(f"[bold]{title}[/]: candidate [cyan]{result.candidate}[/] from {result.parent} -> {result.model_ref}")
    if getattr(result, "measurement", None):
        console.print(comparison_table(result.candidate, result.parent, result.measurement, result.comparison))


def quantize_cmd(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="int8 (int8-x86 on x86 CPUs, else int8-torchao) | int8-x86 | "
            "int8-torchao | int8-weight-only | int4 | gguf:q8_0 | gguf:q4_k_m | "
            "gguf:<type> | bnb-int8 | bnb-nf4 (GPU)",
        ),
    ] = "int8",
    start: FromOpt = None,
    name: Annotated[Optional[str], typer.Option(help="candidate name (default: <parent>:<method>)")] = None,
    no_measure: NoMeasureOpt = False,
    gguf_fallback: Annotated[
        Optional[str],
        typer.Option(
            help="GGUF k-quants: type for tensors whose rows do not fit 256-weight blocks "
            "(llama.cpp | q4_0 | iq4_nl | q5_0 | q8_0); default optimize.quantize.gguf_fallback"
        ),
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Post-training quantization (int8 on PyTorch's x86 engine or torchao, torchao int4, llama.cpp GGUF,
    bitsandbytes on a GPU)."""
    from odyssey.optimize.quantization import quantize

    result = quantize(
        _project(project), to, start_from=start, measure=not no_measure, name=name, gguf_fallback=gguf_fallback
    )
    _emit(result.as_dict()) if as_json else _show(result, f"quantize --to {to}")


def distill_cmd(
    teacher: Annotated[
        Optional[str], typer.Option(help="teacher candidate, 'best' or a model ref (default: optimize.distill.teacher)")
    ] = None,
    student_layers: Annotated[
        Optional[int], typer.Option(help="layers of the student built from the teacher (default: half)")
    ] = None,
    student: Annotated[Optional[str], typer.Option(help="a model ref sharing the teacher's tokenizer instead")] = None,
    student_init: Annotated[
        Optional[str],
        typer.Option(
            help="teacher layers the student keeps: every-other | block-influence (default: "
            "optimize.distill.student_init)"
        ),
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="training steps (default: optimize.distill.steps)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its last checkpoint")] = False,
    no_measure: NoMeasureOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Knowledge distillation: KL to the teacher's softened token distributions + CE on the references."""
    from odyssey.optimize.distillation import distill

    result = distill(
        _project(project),
        teacher=teacher,
        student_layers=student_layers,
        student=student,
        steps=steps,
        resume=resume,
        measure=not no_measure,
        student_init=student_init,
    )
    _emit(result.as_dict()) if as_json else _show(result, "distill")


def prune_cmd(
    structured: Annotated[
        Optional[bool],
        typer.Option("--structured/--unstructured", help="remove whole units (default) or single weights"),
    ] = None,
    sparsity: Annotated[Optional[float], typer.Option(help="fraction removed, in (0, 1)")] = None,
    target: Annotated[Optional[str], typer.Option(help="structured: mlp | heads | layers")] = None,
    recover: Annotated[Optional[int], typer.Option(help="LoRA recovery fine-tune steps (0: none)")] = None,
    start: FromOpt = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted recovery from its last checkpoint")] = False,
    no_measure: NoMeasureOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Magnitude pruning, or structured removal of MLP neurons / heads / layers, then optional recovery."""
    from odyssey.optimize.pruning import prune

    result = prune(
        _project(project),
        structured=structured,
        sparsity=sparsity,
        target=target,
        recover_steps=recover,
        start_from=start,
        resume=resume,
        measure=not no_measure,
    )
    _emit(result.as_dict()) if as_json else _show(result, "prune")


def report_cmd(
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Every measured candidate beside its parent: size, memory, speed, quality, gates; Pareto plot."""
    from odyssey.optimize.reporting import report, report_table

    result = report(_project(project))
    if as_json:
        _emit(result.as_dict())
        return
    console = _console()
    console.print(report_table(result))
    for note in result.notes:
        console.print(f"[dim]{note}[/]")
    console.print(f"table: {result.paths.get('markdown')}\nplot:  {result.paths.get('plot')}")


def tools_cmd(as_json: JsonOpt = False):
    """Build (once) and show llama.cpp's tools: llama-server, llama-quantize, convert_hf_to_gguf.py."""
    from odyssey.models import llamacpp

    paths = {name: str(llamacpp.tool_path(name)) for name in llamacpp.TOOLS}
    paths["convert_hf_to_gguf.py"] = str(llamacpp.convert_script())
    paths["version"] = llamacpp.version()
    if as_json:
        _emit(paths)
    else:
        for key, value in paths.items():
            _console().print(f"{key}: {value}")


def register(app: typer.Typer) -> None:
    opt = typer.Typer(
        help="Shrink a candidate: quantize, distill, prune; compare size, speed and quality.", no_args_is_help=True
    )
    app.add_typer(opt, name="optimize")
    opt.command("quantize")(quantize_cmd)
    opt.command("distill")(distill_cmd)
    opt.command("prune")(prune_cmd)
    opt.command("report")(report_cmd)
    opt.command("tools")(tools_cmd)
