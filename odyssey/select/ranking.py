"""Zero-shot selection: every candidate in ``models:`` through the one harness with the scope's prompt
and data, ranked against the gates with size and latency beside the metrics; the choice is stored.

Ranking: candidates that pass every gate first, then by the scope's primary metric (higher is better),
then by p95 latency and parameters (smaller is better) to break ties. A candidate that cannot run
(encoder-only model on a generation task, hub model offline, package missing) is listed last with the
reason, instead of stopping the comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from odyssey.errors import OdysseyError


@dataclass
class Ranked:
    rank: int
    name: str
    model_ref: str
    family: str | None
    n_params: int | None
    context_length: int | None
    license: str | None
    metrics: dict[str, float]
    gates: list[dict]
    passed: bool | None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SelectResult:
    run_id: int
    split: str
    n_examples: int
    primary_metric: str
    ranking: list[Ranked]
    chosen: str | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "split": self.split,
            "n_examples": self.n_examples,
            "primary_metric": self.primary_metric,
            "chosen": self.chosen,
            "notes": self.notes,
            "ranking": [r.as_dict() for r in self.ranking],
        }


def rank_key(primary: str, row: dict):
    """Sort key: runnable, then passes gates, then primary metric (desc), latency, size (asc)."""
    metrics = row.get("metrics") or {}
    runnable = primary in metrics
    return (
        0 if runnable else 1,
        0 if row.get("passed") is not False else 1,
        -(metrics.get(primary) or 0.0),
        metrics.get("p95_latency_ms", float("inf")),
        row.get("n_params") or float("inf"),
    )


def select_models(
    project,
    *,
    limit: int | None = None,
    split: str | None = None,
    models: list[str] | None = None,
    batch_size: int | None = None,
    engine: str | None = None,
) -> SelectResult:
    """Evaluate every candidate zero-shot and record the ranking and the choice (``odyssey select``)."""
    from odyssey.engines import open_engine
    from odyssey.evaluate import check_gates, gates_pass, run_harness
    from odyssey.evaluate.checks import headline
    from odyssey.models import describe, parse_ref
    from odyssey.store.select import add_selection

    spec = project.spec
    settings = spec.select
    scope = spec.scope
    split = split or settings.split
    limit = limit if limit is not None else settings.limit
    refs = models or [e.ref for e in spec.model_entries()]
    if not refs:
        raise OdysseyError(
            f"{project.spec_path}: no models are listed to select from",
            hint="add candidates under models:, e.g. - packaged:smollm2-135m-instruct",
        )
    data = project.dataset()
    examples = data.split(split)[: limit or None]
    cfg = project.default_prompt()
    store = project.store
    config = {"models": refs, "split": split, "n": len(examples), "prompt": cfg.as_dict(), "data": data.fingerprint}
    rows: list[dict] = []
    notes: list[str] = []
    with store.run("select", spec.as_dict(), config) as run:
        for ref in refs:
            info = describe(ref, project.root)
            try:
                slug = parse_ref(ref, project.root).slug
            except OdysseyError:
                slug = ref
            name = f"{slug}:zero-shot"
            row = {
                "name": name,
                "model_ref": ref,
                "family": info.family,
                "n_params": info.n_params,
                "context_length": info.context_length,
                "license": info.license,
                "metrics": {},
                "gates": [],
                "passed": None,
                "note": "",
            }
            if not info.available:
                row["note"] = f"not available: {info.note}"
                rows.append(row)
                continue
            try:
                with open_engine(
                    ref,
                    root=project.root,
                    evaluate=spec.evaluate,
                    engine=engine,
                    dtype=spec.evaluate.dtype,
                    batch_size=batch_size or settings.batch_size,
                    log_dir=project.state_dir,
                ) as loaded:  # one model in memory at a time
                    result = run_harness(
                        loaded,
                        examples,
                        cfg,
                        scope,
                        pool=[],
                        description=f"{name} on {split}",
                        batch_size=batch_size or settings.batch_size,
                    )
                    n_params = loaded.n_params or info.n_params
            except OdysseyError as exc:
                row["note"] = exc.message
                rows.append(row)
                continue
            result.metrics["n_params"] = n_params
            cand_id = store.upsert_candidate(
                name, "select", ref, {"prompt": cfg.as_dict(), "data": data.fingerprint}, None, run.id
            )
            store.add_outputs(run.id, result.rows, candidate_id=cand_id, split=split)
            run.log_metrics(result.metrics, candidate_id=cand_id, split=split)
            gates = check_gates(scope, result.metrics)
            row.update(
                metrics=result.metrics,
                gates=gates,
                passed=gates_pass(gates),
                n_params=n_params,
                note="; ".join(headline(n) for n in result.notes),
            )
            rows.append(row)
        primary = scope.primary_metric
        rows.sort(key=lambda r: rank_key(primary, r))
        ranking = [Ranked(rank=i + 1, **r) for i, r in enumerate(rows)]
        runnable = [r for r in ranking if primary in r.metrics]
        chosen = runnable[0].name if runnable else None
        if runnable and not any(r.passed for r in runnable):
            notes.append(f"no candidate passes every gate; {chosen} scores best on {primary}")
        if not runnable:
            notes.append("no candidate could be evaluated; see the notes per model")
        add_selection(store, run.id, chosen, split, len(examples), [r.as_dict() for r in ranking])
        run.set_summary(
            {
                "chosen": chosen,
                "primary_metric": primary,
                "split": split,
                "n": len(examples),
                "ranking": [{"name": r.name, primary: r.metrics.get(primary), "passed": r.passed} for r in ranking],
            }
        )
    return SelectResult(run.id, split, len(examples), primary, ranking, chosen, notes)
