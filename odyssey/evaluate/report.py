"""Evaluation reports: JSON for machines, Markdown for people, a bar chart comparing every
candidate on the split with the scope's gates drawn as lines. Files go into the run's
artifacts folder and are recorded (with sha256) in the store.
"""

from __future__ import annotations

import json
from pathlib import Path

from odyssey.spec import QUALITY_METRICS


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def comparison(project, split: str) -> dict[str, dict[str, float]]:
    """Latest metrics of every candidate on ``split``, from the store."""
    store = project.store
    table = {}
    for cand in store.candidates():
        metrics = store.latest_metrics(cand["id"], split)
        if metrics:
            table[cand["name"]] = metrics
    return table


def plot_comparison(table: dict[str, dict[str, float]], gates: list[dict], path: Path, title: str) -> Path | None:
    metric_names = sorted({m for row in table.values() for m in row if m in QUALITY_METRICS})
    if not table or not metric_names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metric_names) + 2), 4.2), layout="constrained")
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metric_names))]
        values = [table[name].get(m, 0.0) for m in metric_names]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    for g in gates:
        if g["metric"] in metric_names:
            j = metric_names.index(g["metric"])
            threshold = float(g["gate"].split()[-1])
            ax.hlines(threshold, j - width / 2, j + 0.8 - width / 2, colors="crimson", linestyles="--")
            ax.text(
                j + 0.8 - width / 2,
                threshold,
                f" gate {g['gate'].split(' ', 1)[1]}",
                color="crimson",
                fontsize=7,
                va="bottom",
            )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metric_names))], metric_names)
    ax.set_ylabel("score")
    ax.set_ylim(
        0, min(1.05, max(0.1, 1.25 * max(v for row in table.values() for k, v in row.items() if k in metric_names)))
    )
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


CHECK_LABELS = {
    "copy_rate": "answers that copy the input",
    "repeat_rate": "answers that repeat a phrase",
    "empty_rate": "empty answers",
    "truncated_rate": "answers cut at max_new_tokens",
    "distinct_2": "distinct 2-grams",
    "length_ratio": "length / reference length (words)",
}


def _output_checks(result) -> list[str]:
    """What the answers look like (odyssey.evaluate.checks), with each warning and its examples."""
    shown = [k for k in CHECK_LABELS if k in result.metrics]
    if not shown:
        return []
    lines = ["", "## Output checks", "", "| check | value |", "|---|---|"]
    lines += [f"| {CHECK_LABELS[k]} | {_fmt(result.metrics[k])} |" for k in shown]
    for warning in getattr(result, "warnings", []):
        head, *examples = warning.splitlines()
        lines += ["", f"> **warning:** {head}"] + [f"> `{e.strip()}`" for e in examples]
    return lines


def write_report(project, run, candidate: str, split: str, result, gates: list[dict]) -> dict[str, str]:
    out = run.artifacts_dir
    out.mkdir(parents=True, exist_ok=True)
    table = comparison(project, split)
    payload = {
        "project": project.spec.name,
        "run_id": run.id,
        "candidate": candidate,
        "split": split,
        "metrics": result.metrics,
        "gates": gates,
        "notes": result.notes,
        "stats": result.stats,
        "comparison": table,
        "examples": result.rows[:20],
    }
    json_path = out / "report.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    plot = plot_comparison(
        table, gates, out / "metrics.png", f"{project.spec.name}: {candidate} on {split} (run {run.id})"
    )

    lines = [f"# {project.spec.name}: evaluation of `{candidate}` on {split}", ""]
    lines += ["## Gates", "", "| gate | value | result |", "|---|---|---|"]
    for g in gates:
        verdict = {True: "pass", False: "**FAIL**", None: "not measured"}[g["passed"]]
        lines.append(f"| `{g['gate']}` | {_fmt(g['value'])} | {verdict} |")
    if not gates:
        lines.append("| (the scope sets no gates) | | |")
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result.metrics.items()]
    if len(table) > 1:
        metric_names = sorted({m for row in table.values() for m in row if m in QUALITY_METRICS})
        lines += [
            "",
            "## All candidates on this split",
            "",
            "| candidate | " + " | ".join(metric_names) + " |",
            "|---|" + "---|" * len(metric_names),
        ]
        lines += [f"| {n} | " + " | ".join(_fmt(row.get(m)) for m in metric_names) + " |" for n, row in table.items()]
    if plot:
        lines += ["", f"![metrics]({plot.name})"]
    lines += _output_checks(result)
    other = [n for n in result.notes if n not in getattr(result, "warnings", [])]
    if other:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in other]
    lines += ["", "## Examples", ""]
    for row in result.rows[:5]:
        refs = " / ".join(row["references"])
        lines += [f"**{row['example_id']}** — prediction: {row['prediction']!r}", f"  reference: {refs!r}", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(lines))
    paths = {"json": json_path, "markdown": md_path}
    if plot:
        paths["plot"] = plot
    for kind, path in paths.items():
        run.add_artifact(path, f"report-{kind}")
    return {k: str(v) for k, v in paths.items()}
