"""The evaluation harness every stage shares: render prompts -> batched generation -> metrics
-> gates -> per-example outputs in the store -> a report (JSON, Markdown, plot).

``run_harness`` scores one loaded model with one prompt configuration on a list of examples
(the prompt stage calls it once per variant); ``evaluate_candidate`` is the ``odyssey eval``
entry point that records a run, its metrics and outputs, and writes the report.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from odyssey.data import Example
from odyssey.errors import OdysseyError
from odyssey.prompts import DemoSelector, PromptConfig, render
from odyssey.spec import Gate, Scope


@dataclass
class HarnessResult:
    metrics: dict[str, float]
    rows: list[dict]
    stats: dict
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # output checks past their thresholds (checks.py)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def as_engine(model, batch_size: int = 8):
    """An engine for ``model``: engines pass through, a loaded transformers model gets the reference engine."""
    from odyssey.models import LoadedModel

    if isinstance(model, LoadedModel):
        from odyssey.engines.transformers import TransformersEngine

        return TransformersEngine(model, batch_size=batch_size)
    return model


def _render_all(engine, examples: list[Example], cfg: PromptConfig, pool, settings: dict):
    budget = engine.context_length - int(settings["max_new_tokens"])
    if budget < 16:
        raise OdysseyError(
            f"max_new_tokens={settings['max_new_tokens']} leaves no room for a prompt in "
            f"{engine.ref}'s {engine.context_length}-token context",
            hint="lower max_new_tokens",
        )
    selector = DemoSelector(pool or [], cfg.selection, cfg.shots, cfg.seed)
    rendered = [render(engine.tokenizer, cfg, ex, selector(ex), budget) for ex in examples]
    notes = []
    short = sum(1 for r in rendered if r.shots_used < cfg.shots)
    if short:
        notes.append(
            f"{short} of {len(rendered)} prompts dropped in-context examples to fit the "
            f"{engine.context_length}-token context"
        )
    cut = sum(1 for r in rendered if r.truncated_input)
    if cut:
        notes.append(f"{cut} of {len(rendered)} inputs were truncated to fit the context")
    return rendered, notes


def run_harness(
    model,
    examples: list[Example],
    cfg: PromptConfig,
    scope: Scope,
    *,
    pool: list[Example] | None = None,
    batch_size: int = 8,
    description: str = "evaluating",
) -> HarnessResult:
    """Score one model (an engine from ``odyssey.engines.open_engine``, or a loaded transformers
    model) with one prompt configuration on ``examples``, and check what its answers look like."""
    from odyssey import metrics as metric_fns
    from odyssey.evaluate.checks import check_outputs

    if not examples:
        raise OdysseyError("no examples to evaluate", hint="check the split and --limit")
    engine = as_engine(model, batch_size)
    settings = {"max_new_tokens": 64, **cfg.generation}
    rendered, notes = _render_all(engine, examples, cfg, pool, settings)
    outputs, stats = engine.generate(
        [r.text for r in rendered], settings, batch_size=batch_size, description=description
    )
    predictions = [o.text for o in outputs]
    references = [list(ex.references) for ex in examples]
    scored = metric_fns.compute(scope.metric_names, predictions, references, task=scope.task, labels=scope.labels)
    rows = [
        {
            "example_id": ex.id,
            "prediction": o.text,
            "prompt": r.text,
            "references": list(ex.references),
            "scores": s,
            "latency_ms": o.latency_ms,
        }
        for ex, r, o, s in zip(examples, rendered, outputs, scored.per_example)
    ]
    checks = check_outputs(rows, [ex.input for ex in examples], [o.finish_reason for o in outputs])
    return HarnessResult(
        {**scored.corpus, **_system_metrics(outputs, stats, len(examples)), **checks.metrics},
        rows,
        stats,
        notes + checks.warnings,
        checks.warnings,
    )


def _system_metrics(outputs, stats: dict, n: int) -> dict[str, float]:
    latencies = [o.latency_ms for o in outputs]
    return {
        "p50_latency_ms": percentile(latencies, 50),
        "p95_latency_ms": percentile(latencies, 95),
        "examples_per_s": n / stats["wall_s"],
        "tokens_per_s": stats["new_tokens"] / stats["wall_s"],
        "memory_gb": stats["peak_rss_gb"],
        "mean_new_tokens": statistics.fmean(o.new_tokens for o in outputs),
    }


def check_gates(scope: Scope, metrics: dict[str, float]) -> list[dict]:
    """Each gate of the scope with the measured value and whether it passes (None: not measured)."""
    return [
        {"gate": str(g), "metric": g.metric, "value": metrics.get(g.metric), "passed": g.passes(metrics.get(g.metric))}
        for g in scope.gate_list()
    ]


def gates_pass(results: list[dict]) -> bool:
    return all(r["passed"] is not False for r in results)


@dataclass
class EvalResult:
    run_id: int
    candidate: str
    model_ref: str
    split: str
    metrics: dict[str, float]
    gates: list[dict]
    report: dict[str, str]
    notes: list[str]

    @property
    def passed(self) -> bool:
        return gates_pass(self.gates)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def candidate_setup(project, model: str | None, candidate: str | None) -> tuple[str, str, PromptConfig, int | None]:
    """(candidate name, model ref, prompt config, parent id) for an eval request: a thin wrapper over
    ``Project.candidate``, the one resolver.

    ``candidate`` (a name, ``best`` or a model reference) wins over ``model`` (a model reference).
    With neither, the best candidate (``Store.best``) is evaluated, and the console says so: what a
    user just kept, not the zero-shot model. With none scored yet, the first model zero-shot."""
    chosen = project.candidate(candidate or model or "best")
    if not model and not candidate and chosen.stored:
        from odyssey import ui

        ui.say(f"evaluating the best candidate, {chosen.name} (name another with --candidate or --model)")
    return chosen.name, chosen.model_ref, chosen.prompt, chosen.parent_id


def evaluate_candidate(
    project,
    model: str | None = None,
    split: str = "test",
    *,
    candidate: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    engine: str | None = None,
) -> EvalResult:
    from odyssey.engines import open_engine
    from odyssey.evaluate.report import write_report

    name, ref, cfg, parent = candidate_setup(project, model, candidate)
    scope, espec = project.spec.scope, project.spec.evaluate
    data = project.dataset()
    examples = data.split(split)[: limit or espec.limit or None]
    pool = data.splits.get("train", []) if cfg.shots else []
    settings = {
        "candidate": name,
        "model": ref,
        "split": split,
        "n": len(examples),
        "prompt": cfg.as_dict(),
        "data": data.fingerprint,
    }
    store = project.store
    with store.run("evaluate", project.spec.as_dict(), settings) as run:
        with open_engine(
            ref,
            root=project.root,
            evaluate=espec,
            engine=engine,
            dtype=espec.dtype,
            batch_size=batch_size or espec.batch_size,
            model_name=name,
            log_dir=project.state_dir,
        ) as gen:
            settings["engine"] = gen.info.as_dict()
            result = run_harness(
                gen,
                examples,
                cfg,
                scope,
                pool=pool,
                batch_size=batch_size or espec.batch_size,
                description=f"{name} on {split}",
            )
            n_params = gen.n_params
        stage = "prompt" if cfg.shots or candidate else "select"
        existing = store.candidate(name)
        cand_id = (
            existing["id"]
            if existing
            else store.upsert_candidate(
                name, stage, ref, {"prompt": cfg.as_dict(), "data": data.fingerprint}, parent, run.id
            )
        )
        store.add_outputs(run.id, result.rows, candidate_id=cand_id, split=split)
        if n_params:
            result.metrics["n_params"] = n_params
        run.log_metrics(result.metrics, candidate_id=cand_id, split=split)
        gates = check_gates(scope, result.metrics)
        report = write_report(project, run, name, split, result, gates)
        run.set_summary(
            {
                "candidate": name,
                "metrics": result.metrics,
                "gates": gates,
                "notes": result.notes,
                "warnings": result.warnings,
                "engine": settings["engine"],
            }
        )
    return EvalResult(run.id, name, ref, split, result.metrics, gates, report, result.notes)


__all__ = [
    "EvalResult",
    "HarnessResult",
    "as_engine",
    "check_gates",
    "evaluate_candidate",
    "gates_pass",
    "percentile",
    "run_harness",
    "Gate",
]
