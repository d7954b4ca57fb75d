"""Rich tables for the CLI and the demo: one place that knows how results look in a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

def make_console(stderr: bool = False) -> Console:
    """Rich console; wide when output is not a terminal, so logs and pipes get whole tables."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    # emoji=False: candidate names like "tiny:llama:lora" must print as written, not as a 🦙.
    return Console(stderr=stderr, width=None if stream.isatty() else 150, emoji=False)


PASS = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]–[/]"}


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _params(n) -> str:
    if not n:
        return "–"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def models_table(infos) -> Table:
    table = Table(title="models", show_lines=False)
    for col in ("model", "family", "arch", "params", "context", "fp32 GB", "bf16 GB", "int8 GB", "train full GB",
                "train LoRA GB", "license", "note"):
        table.add_column(col, overflow="fold")
    for info in infos:
        mem = info.memory_gb or {}
        inf = mem.get("inference_gb", {})
        table.add_row(
            info.ref if info.available else f"[dim]{info.ref}[/]", info.family or "–", info.architecture or "–",
            _params(info.n_params), _num(info.context_length), _num(inf.get("fp32"), 2), _num(inf.get("bf16"), 2),
            _num(inf.get("int8"), 2), _num(mem.get("train_full_gb"), 2), _num(mem.get("train_lora_gb"), 2),
            info.license or "–", info.note,
        )
    return table


def gates_table(gates: list[dict]) -> Table:
    table = Table(title="gates")
    for col in ("gate", "value", "result"):
        table.add_column(col)
    for g in gates:
        table.add_row(g["gate"], _num(g["value"]), PASS[g["passed"]])
    return table


def metrics_table(metrics: dict, title: str = "metrics") -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, _num(v))
    return table


def variants_table(result) -> Table:
    primary = result.primary_metric
    table = Table(title=f"prompt variants on validation (best: {result.best.name})")
    cols = ["variant", primary] + [m for m in ("rouge1", "rouge2", "rougeL", "accuracy", "f1", "exact_match")
                                   if m != primary and m in result.best.metrics] + ["p95 ms"]
    for col in cols:
        table.add_column(col, justify="right" if col != "variant" else "left")
    for v in result.variants:
        mark = "★ " if v.name == result.best.name else "  "
        table.add_row(mark + v.name, *[_num(v.metrics.get(c)) for c in cols[1:-1]], _num(v.metrics.get("p95_latency_ms"), 0))
    return table


def board_tables(board) -> list[Table]:
    stages = Table(title=f"{board.project} ({board.task}): lifecycle")
    for col in ("stage", "status", "detail"):
        stages.add_column(col)
    colors = {"succeeded": "green", "failed": "red", "running": "yellow"}
    for s in board.stages:
        color = colors.get(s["status"], "dim")
        stages.add_row(s["stage"], f"[{color}]{s['status']}[/]", str(s.get("detail") or "")[:80])
    cands = Table(title=f"candidates (best on test by {board.primary_metric}: {board.best or '–'})")
    metric_cols: list[str] = []
    for c in board.candidates:
        metric_cols += [m for m in c.metrics if m not in metric_cols and m in
                        {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "accuracy", "f1", "exact_match",
                         "p95_latency_ms", "memory_gb", "win_rate", "kl", "toxicity"}]  # last three: align
    for col in ["candidate", "stage", "split", *metric_cols, "gates"]:
        cands.add_column(col, justify="left" if col in {"candidate", "stage", "split"} else "right")
    for c in board.candidates:
        star = "★ " if c.name == board.best else ""
        cands.add_row(star + c.name, c.stage, c.split or "–",
                      *[_num(c.metrics.get(m), 3 if "latency" not in m else 0) for m in metric_cols],
                      PASS[c.passed])
    return [stages, cands]


def print_tables(console: Console, *tables):
    for table in tables:
        console.print(table)
