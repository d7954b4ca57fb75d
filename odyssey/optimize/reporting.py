"""``odyssey optimize report``: every measured candidate beside its parent, against the gates.

Writes report.json, report.md (the table) and pareto.png (quality vs p95 latency, marker area
proportional to the size on disk; Pareto-optimal candidates ringed, gate thresholds drawn) into
the report run's artifacts folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from odyssey.optimize.common import STAGE


@dataclass
class OptimizeReport:
    run_id: int
    primary_metric: str
    rows: list[dict]
    paths: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def pareto_front(rows: list[dict], quality: str) -> set[str]:
    """Names of candidates no other candidate beats on both quality (higher) and p95 latency (lower)."""
    points = [(r["name"], r["metrics"].get(quality), r.get("p95_latency_ms")) for r in rows]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    front = set()
    for name, q, lat in points:
        dominated = any((q2 >= q and l2 <= lat) and (q2 > q or l2 < lat) for _, q2, l2 in points)
        if not dominated:
            front.add(name)
    return front


def collect(project) -> tuple[list[dict], str]:
    from odyssey.evaluate import check_gates
    from odyssey.store.optimize import measurements

    store = project.store
    scope = project.spec.scope
    primary = scope.primary_metric
    cands = {c["id"]: c for c in store.candidates()}
    rows = []
    for m in measurements(store):
        cand = cands.get(m["candidate_id"])
        if cand is None:
            continue
        parent = cands.get(cand["parent_id"]) if cand["parent_id"] else None
        board = store.latest_metrics(cand["id"], m.get("split") or project.spec.optimize.measure.split)
        gate_values = {
            **board,
            **m["metrics"],
            "memory_gb": m.get("peak_rss_gb"),
            "p95_latency_ms": m.get("p95_latency_ms"),
        }
        gates = check_gates(scope, gate_values)
        rows.append(
            {
                "name": cand["name"],
                "stage": cand["stage"],
                "parent": parent["name"] if parent else None,
                "method": (cand["config"].get("optimize") or {}).get("method") or m.get("method"),
                "backend": m.get("backend"),
                "model_ref": cand["model_ref"],
                "size_mb": m.get("size_mb"),
                "peak_rss_gb": m.get("peak_rss_gb"),
                "load_rss_gb": m.get("load_rss_gb"),
                "prefill_tok_s": m.get("prefill_tok_s"),
                "decode_tok_s": m.get("decode_tok_s"),
                "decode_tok_s_batched": m.get("decode_tok_s_batched"),
                "p50_latency_ms": m.get("p50_latency_ms"),
                "p95_latency_ms": m.get("p95_latency_ms"),
                "metrics": m["metrics"],
                "comparison": m.get("comparison", {}),
                "gates": gates,
                "passed": all(g["passed"] is not False for g in gates),
                "n_params": m.get("n_params"),
                # the paired figure (both models timed alternately in one process) where it was measured
                "decode_speedup": (m.get("comparison") or {}).get("decode_speedup_paired")
                or (m.get("comparison") or {}).get("decode_speedup"),
            }
        )
    front = pareto_front(rows, primary)
    for r in rows:
        r["pareto"] = r["name"] in front
    return rows, primary


def plot_pareto(rows: list[dict], quality: str, gates: list, path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["metrics"].get(quality) is not None and r.get("p95_latency_ms")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sizes = [max(r.get("size_mb") or 1, 1) for r in pts]
    scale = 900 / max(sizes)
    for r, s in zip(pts, sizes):
        ax.scatter(
            r["p95_latency_ms"],
            r["metrics"][quality],
            s=30 + s * scale,
            alpha=0.55,
            color="tab:green" if r["passed"] else "tab:red",
            edgecolors="black" if r["pareto"] else "none",
            linewidths=1.5,
        )
        ax.annotate(
            f"{r['name']}\n{_fmt(r.get('size_mb'))} MB",
            (r["p95_latency_ms"], r["metrics"][quality]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    for g in gates:
        if g.metric == quality:
            ax.axhline(g.threshold, color="grey", linestyle="--", linewidth=1)
        if g.metric == "p95_latency_ms":
            ax.axvline(g.threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("p95 latency (ms)")
    ax.set_ylabel(quality)
    ax.set_title(title + "\n(marker area ∝ size on disk; ringed: Pareto-optimal; green: passes the gates)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(project) -> OptimizeReport:
    store = project.store
    rows, primary = collect(project)
    notes = []
    if not rows:
        notes.append("nothing measured yet: run `odyssey optimize quantize|distill|prune` first")
    if any(r["comparison"].get("decode_speedup_paired") for r in rows):
        notes.append(
            "decode × parent: candidate and parent timed in alternating rounds in one process (median of the "
            "rounds' ratios), where measured; the decode tok/s columns come from each model's own process"
        )
    if any(r["method"] == "magnitude" for r in rows):
        notes.append(
            "unstructured (magnitude) pruning zeroes weights but keeps dense tensors: no speed or size gain "
            "on dense CPU kernels unless stored sparse (see sparse_size_mb in the prune result)"
        )
    with store.run(STAGE, project.spec.as_dict(), {"action": "report"}) as run:
        out = run.artifacts_dir
        out.mkdir(parents=True, exist_ok=True)
        plot = plot_pareto(
            rows,
            primary,
            project.spec.scope.gate_list(),
            out / "pareto.png",
            f"{project.spec.name}: size / speed / quality",
        )
        (out / "report.json").write_text(json.dumps({"primary_metric": primary, "rows": rows}, indent=2, default=str))
        lines = [
            f"# {project.spec.name}: optimized candidates",
            "",
            f"| candidate | parent | method | size MB | peak RSS GB | decode tok/s | batched tok/s | p95 ms | "
            f"{primary} | Δ{primary} vs parent | decode × parent | gates |",
            "|---" * 12 + "|",
        ]
        for r in rows:
            c = r["comparison"]
            lines.append(
                " | ".join(
                    [
                        f"| {r['name']}",
                        _fmt(r["parent"]),
                        _fmt(r["method"]),
                        _fmt(r["size_mb"]),
                        _fmt(r["peak_rss_gb"]),
                        _fmt(r["decode_tok_s"]),
                        _fmt(r["decode_tok_s_batched"]),
                        _fmt(r["p95_latency_ms"]),
                        _fmt(r["metrics"].get(primary)),
                        _fmt(c.get(f"{primary}_change")),
                        _fmt(r["decode_speedup"]),
                        ("pass" if r["passed"] else "**fail**") + (" (Pareto)" if r["pareto"] else "") + " |",
                    ]
                )
            )
        lines += ["", *[f"- {n}" for n in notes]]
        if plot:
            lines += ["", f"![pareto]({plot.name})"]
        (out / "report.md").write_text("\n".join(lines) + "\n")
        paths = {
            "json": str(out / "report.json"),
            "markdown": str(out / "report.md"),
            "plot": str(plot) if plot else "",
        }
        for key, kind in (("json", "report"), ("markdown", "report"), ("plot", "plot")):
            if paths[key]:
                run.add_artifact(paths[key], kind)
        run.set_summary({"candidates": len(rows), "pareto": [r["name"] for r in rows if r["pareto"]]})
    return OptimizeReport(run.id, primary, rows, paths, notes)


# ---- tables for the CLI and the demo -------------------------------------------------------------


def report_table(result: OptimizeReport):
    from rich.table import Table

    p = result.primary_metric
    table = Table(title=f"optimized candidates (quality: {p})")
    for col in (
        "candidate",
        "parent",
        "method",
        "size MB",
        "peak GB",
        "decode tok/s",
        "p95 ms",
        p,
        f"Δ{p}",
        "speed ×",
        "gates",
    ):
        table.add_column(col)
    for r in result.rows:
        c = r["comparison"]
        table.add_row(
            r["name"],
            _fmt(r["parent"]),
            _fmt(r["method"]),
            _fmt(r["size_mb"]),
            _fmt(r["peak_rss_gb"]),
            _fmt(r["decode_tok_s"]),
            _fmt(r["p95_latency_ms"]),
            _fmt(r["metrics"].get(p)),
            _fmt(c.get(f"{p}_change")),
            _fmt(r["decode_speedup"]),
            ("[green]pass[/]" if r["passed"] else "[red]fail[/]") + (" ★" if r["pareto"] else ""),
        )
    return table


def comparison_table(name: str, parent: str, measurement: dict, comparison: dict):
    from rich.table import Table

    child, par = measurement["candidate"], measurement["parent"]
    table = Table(title=f"{name} vs {parent}")
    for col in ("", parent, name, "change"):
        table.add_column(col)
    rows = [
        ("size MB", "size_mb", "size_ratio"),
        ("peak RSS GB", "peak_rss_gb", "peak_rss_ratio"),
        ("prefill tok/s", "prefill_tok_s", "prefill_speedup"),
        ("decode tok/s", "decode_tok_s", "decode_speedup"),
        ("decode tok/s (batched)", "decode_tok_s_batched", "decode_batched_speedup"),
        ("p95 latency ms", "p95_latency_ms", "p95_latency_ratio"),
    ]
    for label, key, ratio in rows:
        r = comparison.get(ratio)
        table.add_row(label, _fmt(par.get(key)), _fmt(child.get(key)), f"×{r:.2f}" if r else "–")
    paired = comparison.get("paired_speed")
    if paired:
        import statistics

        table.add_row(
            f"decode tok/s, paired ({paired['rounds']} alternating rounds, one process)",
            _fmt(statistics.median(paired["parent_decode_tok_s"])),
            _fmt(statistics.median(paired["candidate_decode_tok_s"])),
            f"×{paired['decode_speedup']:.2f}",
        )
    for key in sorted(set(child.get("metrics", {})) & set(par.get("metrics", {}))):
        delta = comparison.get(f"{key}_change")
        table.add_row(
            key, _fmt(par["metrics"][key]), _fmt(child["metrics"][key]), f"{delta:+.4f}" if delta is not None else "–"
        )
    return table
