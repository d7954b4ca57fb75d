"""How ``odyssey run`` ends: the board, each stage's gain over its parent (primary metric on the test split,
with a paired bootstrap 95 % interval over the per-example scores), and a Markdown report with plots
(the board, quality vs latency, training curves) under ``.odyssey/pipeline/``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

REPORT_DIR = "pipeline"


def finish(project, plan, result, outcomes: dict, pipeline_run) -> None:
    from odyssey.evaluate.board import build_board

    board = build_board(project)
    result.board = board.as_dict()
    result.gains = stage_gains(project, plan, outcomes, best=board.best)
    result.report = write_report(project, result, outcomes)
    for kind, path in result.report.items():
        pipeline_run.add_artifact(Path(path), f"pipeline-{kind}")
    pipeline_run.set_summary({"steps": [s.__dict__ for s in result.steps], "gains": result.gains, "best": board.best})


def per_example(store, run_id: int, candidate: str, metric: str) -> dict[str, float]:
    """example id -> the candidate's score on ``metric`` in one evaluation run (test split)."""
    row = store.candidate(candidate)
    scores = {}
    for out in store.outputs(run_id):
        if out["split"] == "test" and (row is None or out["candidate_id"] == row["id"]):
            value = out["scores"].get(metric)
            if value is not None:
                scores[str(out["example_id"])] = float(value)
    return scores


def gain(child: dict[str, float], parent: dict[str, float], seed: int = 0) -> dict | None:
    """Mean of child - parent over the examples both were scored on, and its paired bootstrap 95 % interval."""
    from odyssey.align.common import bootstrap_ci  # the project's one bootstrap (a pure function)

    common = sorted(set(child) & set(parent))
    if not common:
        return None
    after, before = [child[k] for k in common], [parent[k] for k in common]
    low, high = bootstrap_ci(before, after, seed=seed)
    return {"gain": statistics.fmean(after) - statistics.fmean(before), "low": low, "high": high, "n": len(common)}


def stage_gains(project, plan, outcomes: dict, best: str | None = None) -> list[dict]:
    """One row per candidate the latest evaluate step scored beside its parent, and a last row for the
    whole run: the best candidate over its model zero-shot (what the lifecycle bought, in one number)."""
    evaluate = [s for s in plan.steps if s.stage == "evaluate" and s.id in outcomes]
    if not evaluate:
        return []
    extra = outcomes[evaluate[-1].id].extra
    runs, metric = extra.get("evaluations", {}), project.spec.scope.primary_metric
    made_by = {n: s.stage for s in plan.steps if s.id in outcomes for n in outcomes[s.id].candidates}
    pairs = [(made_by.get(c, "?"), c, p) for c, p in extra.get("pairs", [])]
    zero_shots = [n for n in runs if n.endswith(":zero-shot")]
    if best in runs and zero_shots and best not in zero_shots:
        base = _zero_shot_of(project.store, best, zero_shots)
        if (best, base) not in {(c, p) for _, c, p in pairs}:
            pairs.append(("whole run", best, base))
    rows = []
    for stage, child, parent in pairs:
        if child not in runs or parent not in runs:
            continue
        found = gain(
            per_example(project.store, runs[child], child, metric),
            per_example(project.store, runs[parent], parent, metric),
        )
        if found:
            real = found["low"] > 0 or found["high"] < 0
            rows.append({"stage": stage, "candidate": child, "parent": parent, "metric": metric, **found, "real": real})
    return rows


def _zero_shot_of(store, best: str, zero_shots: list[str]) -> str:
    """The zero-shot the best candidate descends from (its stored lineage), else the one whose model prefix
    it shares (a candidate recorded without a parent), else the first."""
    for name in store.lineage(best):
        if name in zero_shots:
            return name
    return next((z for z in zero_shots if best.startswith(z.removesuffix("zero-shot"))), zero_shots[0])


# ---- the report -------------------------------------------------------------------------------------


def write_report(project, result, outcomes: dict) -> dict[str, str]:
    out = project.state_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    board = result.board
    plots = {
        "board": _board_plot(project, board, out / "board.png"),
        "pareto": _pareto_plot(board, out / "quality_latency.png"),
        "curves": _curves_plot(project, outcomes, out / "training_curves.png"),
    }
    lines = [f"# {project.spec.name}: `odyssey run`" + (f" --profile {result.profile}" if result.profile else ""), ""]
    lines += _steps_section(result) + _board_section(board) + _gains_section(result.gains)
    captions = {"board": "The board", "pareto": "Quality vs p95 latency", "curves": "Training curves"}
    for kind, path in plots.items():
        if path:
            lines += ["", f"## {captions[kind]}", "", f"![{captions[kind]}]({path.name})"]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    payload = out / "report.json"
    payload.write_text(
        json.dumps(
            {"steps": [s.__dict__ for s in result.steps], "board": board, "gains": result.gains}, indent=1, default=str
        )
    )
    return {"markdown": str(md), "json": str(payload), **{k: str(v) for k, v in plots.items() if v}}


def _steps_section(result) -> list[str]:
    lines = ["## Steps", "", "| step | stage | parent | status | time (s) | made |", "|---|---|---|---|---|---|"]
    for s in result.steps:
        wall = f"{s.wall_s:.1f}" if s.wall_s is not None else ""
        lines.append(f"| {s.step} | {s.stage} | {s.parent or ''} | {s.status} | {wall} | {', '.join(s.candidates)} |")
    return lines


def _board_section(board: dict) -> list[str]:
    metric = board["primary_metric"]
    lines = [
        "",
        "## The board",
        "",
        f"Best on test by {metric}: **{board['best'] or '-'}**",
        "",
        f"| candidate | stage | parent | split | {metric} | p95 latency (ms) | gates |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in board["candidates"]:
        value, p95 = c["metrics"].get(metric), c["metrics"].get("p95_latency_ms")
        gates = {True: "pass", False: "FAIL", None: "-"}[c["passed"]]
        lines.append(
            f"| {c['name']} | {c['stage']} | {c['parent'] or ''} | {c['split'] or ''} | "
            f"{'' if value is None else f'{value:.4f}'} | {'' if p95 is None else f'{p95:.0f}'} | {gates} |"
        )
    return lines


def _gains_section(gains: list[dict]) -> list[str]:
    if not gains:
        return ["", "## Gains", "", "No evaluate step scored candidates beside their parents."]
    lines = [
        "",
        "## What each stage bought",
        "",
        "Mean per-example gain over the parent on the test split, with a "
        "paired bootstrap 95 % interval; *real* when the interval excludes 0.",
        "",
        "| stage | candidate | parent | metric | gain | 95 % interval | n | real |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in gains:
        lines.append(
            f"| {g['stage']} | {g['candidate']} | {g['parent']} | {g['metric']} | {g['gain']:+.4f} | "
            f"[{g['low']:+.4f}, {g['high']:+.4f}] | {g['n']} | {'yes' if g['real'] else 'no'} |"
        )
    return lines


def _board_plot(project, board: dict, path: Path) -> Path | None:
    from odyssey.evaluate import check_gates
    from odyssey.evaluate.report import plot_comparison

    table = {c["name"]: c["metrics"] for c in board["candidates"] if c["split"] == "test"}
    return plot_comparison(table, check_gates(project.spec.scope, {}), path, f"{board['project']}: the board (test)")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pareto_plot(board: dict, path: Path) -> Path | None:
    metric = board["primary_metric"]
    points = [
        (c["name"], c["metrics"]["p95_latency_ms"], c["metrics"][metric])
        for c in board["candidates"]
        if c["split"] == "test" and metric in c["metrics"] and "p95_latency_ms" in c["metrics"]
    ]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for name, latency, value in points:
        ax.scatter(latency, value)
        ax.annotate(name, (latency, value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel(f"{metric} (test)")
    ax.set_title(f"{board['project']}: quality vs latency")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curves_plot(project, outcomes: dict, path: Path) -> Path | None:
    """Loss (and validation loss) against step, from each run's history.json artifact."""
    curves = {}
    for outcome in outcomes.values():
        for run_id in outcome.runs:
            for art in project.store.artifacts(run_id):
                if Path(art["path"]).name == "history.json" and Path(art["path"]).exists():
                    history = json.loads(Path(art["path"]).read_text())
                    label = ", ".join(outcome.candidates) or f"run {run_id}"
                    curves[label] = [h for h in history if isinstance(h, dict) and "step" in h]
    curves = {k: v for k, v in curves.items() if any("loss" in h or "val_loss" in h for h in v)}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for label, history in curves.items():
        for key, style in (("loss", "-"), ("val_loss", "--")):
            pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{label} {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{project.spec.name}: training curves")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the console ------------------------------------------------------------------------------------


def steps_table(result):
    from rich.table import Table

    table = Table(title="odyssey run --dry-run: the plan" if result.dry_run else "odyssey run: steps")
    for col in ("step", "stage", "parent", "status", "time (s)", "made / estimate"):
        table.add_column(col)
    colors = {"cached": "dim", "ran": "green", "resumed": "yellow", "will run": "cyan", "will resume": "yellow"}
    for s in result.steps:
        detail = ", ".join(s.candidates)
        if s.estimate and "error" in s.estimate:
            detail = f"no estimate: {s.estimate['error']}"
        elif s.estimate:
            e = s.estimate
            detail = (
                f"{e['method']}: {e['memory_gb']:.2f} of {e['available_gb']:.2f} GB "
                f"{'fits' if e['fits'] else 'DOES NOT FIT'}, ~{e['hours'] * 60:.1f} min"
            )
        wall = f"{s.wall_s:.1f}" if s.wall_s is not None else ""
        status = f"[{colors.get(s.status, 'white')}]{s.status}[/]" + (f" ({s.reason})" if s.reason else "")
        table.add_row(s.step, s.stage, s.parent or "", status, wall, detail)
    return table


def gains_table(gains: list[dict]):
    from rich.table import Table

    table = Table(title="what each stage bought (test split, paired bootstrap 95 % interval)")
    for col in ("stage", "candidate", "parent", "metric", "gain", "95 % interval", "n"):
        table.add_column(col)
    for g in gains:
        table.add_row(
            g["stage"],
            g["candidate"],
            g["parent"],
            g["metric"],
            f"{g['gain']:+.4f}",
            f"[{g['low']:+.4f}, {g['high']:+.4f}]" + (" real" if g["real"] else ""),
            str(g["n"]),
        )
    return table


def print_result(console, result) -> None:
    console.print(steps_table(result))
    if result.dry_run:
        return
    from odyssey.evaluate.board import Board, CandidateRow
    from odyssey.render import board_tables, print_tables

    b = dict(result.board)
    rows = [CandidateRow(**{k: v for k, v in c.items() if k != "passed"}) for c in b.pop("candidates")]
    print_tables(console, *board_tables(Board(candidates=rows, **b)))
    if result.gains:
        console.print(gains_table(result.gains))
    console.print(f"report: {result.report.get('markdown')}  ({result.wall_s:.0f} s)")
