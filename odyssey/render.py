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
    for col in (
        "model",
        "family",
        "arch",
        "params",
        "context",
        "fp32 GB",
        "bf16 GB",
        "int8 GB",
        "train full GB",
        "train LoRA GB",
        "license",
        "note",
    ):
        table.add_column(col, overflow="fold")
    for info in infos:
        mem = info.memory_gb or {}
        inf = mem.get("inference_gb", {})
        table.add_row(
            info.ref if info.available else f"[dim]{info.ref}[/]",
            info.family or "–",
            info.architecture or "–",
            _params(info.n_params),
            _num(info.context_length),
            _num(inf.get("fp32"), 2),
            _num(inf.get("bf16"), 2),
            _num(inf.get("int8"), 2),
            _num(mem.get("train_full_gb"), 2),
            _num(mem.get("train_lora_gb"), 2),
            info.license or "–",
            info.note,
        )
    return table


def gates_table(gates: list[dict]) -> Table:
    table = Table(title="gates")
    for col in ("gate", "value", "result"):
        table.add_column(col)
    for g in gates:
        table.add_row(g["gate"], _num(g["value"]), PASS[g["passed"]])
    return table


def metrics_table(metrics: dict, title: str = "metrics", digits: int = 4) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, _num(v, digits))
    return table


def align_result_tables(result) -> list[Table]:
    """``odyssey align ppo|dpo``: the last training steps, and the aligned candidate against its parent."""
    tables = []
    if result.history:
        shown = ("reward", "kl", "entropy", "length", "loss", "rewards/accuracies")
        keys = [k for k in shown if k in result.history[-1]]
        steps = Table(title=f"{result.method}: training (last steps)")
        for col in ["step", *keys]:
            steps.add_column(col, justify="right")
        for h in result.history[-5:]:
            steps.add_row(str(h.get("step", "")), *[_num(h.get(k), 3) for k in keys])
        tables.append(steps)
    metrics = (result.evaluation or {}).get("metrics") or {}
    if metrics:
        tables.append(metrics_table(metrics, f"{result.candidate} vs {result.parent}", digits=3))
    return tables


def plain_table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A left-titled table of rows as they are (floats to 3 significant digits, None as blank)."""
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)) for v in r])
    return table


def variants_table(result) -> Table:
    primary = result.primary_metric
    table = Table(title=f"prompt variants on validation (best: {result.best.name})")
    cols = (
        ["variant", primary]
        + [
            m
            for m in ("rouge1", "rouge2", "rougeL", "accuracy", "f1", "exact_match")
            if m != primary and m in result.best.metrics
        ]
        + ["p95 ms"]
    )
    for col in cols:
        table.add_column(col, justify="right" if col != "variant" else "left")
    for v in result.variants:
        mark = "★ " if v.name == result.best.name else "  "
        table.add_row(
            mark + v.name, *[_num(v.metrics.get(c)) for c in cols[1:-1]], _num(v.metrics.get("p95_latency_ms"), 0)
        )
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
        metric_cols += [
            m
            for m in c.metrics
            if m not in metric_cols
            and m
            in {
                "rouge1",
                "rouge2",
                "rougeL",
                "rougeLsum",
                "bleu",
                "accuracy",
                "f1",
                "exact_match",
                "p95_latency_ms",
                "memory_gb",
                "win_rate",
                "kl",
                "toxicity",
            }
        ]  # last three: align
    for col in ["candidate", "stage", "split", *metric_cols, "gates"]:
        cands.add_column(col, justify="left" if col in {"candidate", "stage", "split"} else "right")
    for c in board.candidates:
        star = "★ " if c.name == board.best else ""
        cands.add_row(
            star + c.name,
            c.stage,
            c.split or "–",
            *[_num(c.metrics.get(m), 3 if "latency" not in m else 0) for m in metric_cols],
            PASS[c.passed],
        )
    return [stages, cands]


def _gb(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def selection_table(result) -> Table:
    """``odyssey select``: the zero-shot ranking."""
    primary = result.primary_metric
    table = Table(title=f"zero-shot selection on {result.n_examples} {result.split} examples (ranked by {primary})")
    for col in ("#", "candidate", "family", "params", primary, "p95 ms", "memory GB", "gates", "note"):
        table.add_column(col, overflow="fold")
    for r in result.ranking:
        m = r.metrics
        table.add_row(
            str(r.rank),
            r.name,
            r.family or "–",
            f"{(r.n_params or 0) / 1e6:.1f}M",
            f"{m[primary]:.4f}" if primary in m else "–",
            f"{m['p95_latency_ms']:.0f}" if "p95_latency_ms" in m else "–",
            _gb(m.get("memory_gb")),
            {True: "pass", False: "FAIL", None: "–"}[r.passed],
            r.note[:80],
        )
    return table


def plan_tables(result, title: str) -> list[Table]:
    """``odyssey plan``: memory by component, then every method on this hardware."""
    table = Table(title=title)
    table.add_column("component")
    table.add_column("GB", justify="right")
    for name, value in result.memory_gb.items():
        table.add_row(name, _gb(value))
    table.add_row("[bold]total[/]", f"[bold]{result.total_gb:.2f}[/]")
    table.add_row("usable", _gb(result.available_gb))
    methods = Table(title="every method on this hardware")
    for col in ("method", "total GB", "fits", "tokens/s"):
        methods.add_column(col)
    for name, o in result.methods.items():
        methods.add_row(name, _gb(o["total_gb"]), "yes" if o["fits"] else "[red]no[/]", f"{o['tokens_per_s']:.1f}")
    return [table, methods]


def curation_table(report) -> Table:
    """``odyssey data curate``: what each rule dropped, with an example."""
    table = Table(title=f"curation: {report.n_kept} of {report.n_input} documents kept ({report.kept_fraction:.1%})")
    table.add_column("rule")
    table.add_column("dropped", justify="right")
    table.add_column("example")
    for rule, n in report.dropped.items():
        example = (report.examples.get(rule) or [{}])[0].get("text", "")[:70].replace("\n", " ")
        table.add_row(rule, str(n), example)
    return table


def benchmark_table(result) -> Table:
    """``odyssey benchmark``: one row per task and metric."""
    table = Table(title=f"lm-eval: {result.model_ref}")
    for col in ("task", "metric", "value", "stderr", "n"):
        table.add_column(col)
    for s in result.scores:
        table.add_row(
            s["task"],
            s["metric"],
            f"{s['value']:.4f}",
            "–" if s.get("stderr") is None else f"{s['stderr']:.4f}",
            str(s.get("n_samples") or "–"),
        )
    return table


def pretrain_table(result) -> Table:
    """``odyssey pretrain``: the new candidate's size, tokens, time and validation loss."""
    table = Table(title=f"pretrain {result.objective} ({result.size}): candidate {result.candidate}")
    for col in ("params", "tokens seen", "wall s", "val loss", "val ppl", "report"):
        table.add_column(col)
    table.add_row(
        f"{result.n_params / 1e6:.2f}M",
        f"{result.tokens:,}",
        f"{result.wall_s:.0f}",
        f"{result.val_loss:.3f}",
        f"{result.val_perplexity:.1f}",
        result.report,
    )
    return table


def keys_table(rows: list[dict]) -> Table:
    """``odyssey keys list``: names, prefixes, scopes and limits; never the keys themselves."""
    table = Table(title="API keys")
    for col in ("name", "prefix", "scopes", "rpm", "concurrency", "created", "last used", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["prefix"] + "…",
            ",".join(r["scopes"]),
            str(r["rate_limit_rpm"] or "default"),
            str(r["max_concurrency"] or "default"),
            r["created_at"][:19],
            (r["last_used_at"] or "–")[:19],
            (r["revoked_at"] or "")[:19],
        )
    return table


def served_table(title: str, answers: list[tuple[str, str]], latencies_ms: list[float]) -> Table:
    """The demo's deploy step: each request id, its answer on one line, and its latency."""
    table = Table(title=title)
    for col in ("request", "answer", "latency"):
        table.add_column(col, overflow="fold")
    for (rid, text), ms in zip(answers, latencies_ms):
        table.add_row(rid[:18], " ".join((text or "").split())[:90], f"{ms:.0f} ms")
    return table


def print_tables(console: Console, *tables):
    for table in tables:
        console.print(table)
