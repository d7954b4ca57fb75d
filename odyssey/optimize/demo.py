"""The optimize step of ``odyssey demo``: int8-quantize the model and measure it beside its
parent (size, memory, decode speed, p95 latency, ROUGE change); in quick mode, quantize only."""

from __future__ import annotations


def demo_step(project, console, model: str, quick: bool = False) -> None:
    from rich.rule import Rule
    from rich.table import Table

    from odyssey.optimize.measure import settings_for
    from odyssey.optimize.quantization import quantize
    from odyssey.optimize.reporting import _fmt, comparison_table

    console.print(Rule("optimize: odyssey optimize quantize --to int8"))
    settings = {
        **settings_for(project),
        "limit": 3,
        "batch_size": 3,
        "speed_prompt_tokens": 64,
        "speed_new_tokens": 8,
        "speed_batch": 4,
    }
    result = quantize(project, "int8", start_from=model, measure=not quick, measure_settings=settings)
    if result.measurement:
        console.print(comparison_table(result.candidate, result.parent, result.measurement, result.comparison))
        return
    table = Table(title=f"{result.candidate} (quick demo: not measured; `odyssey optimize report` after a full run)")
    for col in ("candidate", "method", "weights MB", "parent weights MB", "size ×"):
        table.add_column(col)
    table.add_row(
        result.candidate,
        result.method,
        _fmt(result.size_mb),
        _fmt(result.parent_size_mb),
        f"{result.size_mb / result.parent_size_mb:.2f}",
    )
    console.print(table)
