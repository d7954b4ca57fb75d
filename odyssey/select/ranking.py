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


@dataclass
class _Zeroshot:
    """What every candidate's zero-shot evaluation in one selection run shares."""

    project: object
    run: object
    examples: list
    prompt: object  # the project's default prompt config
    data: object  # the project's dataset (its fingerprint is recorded)
    split: str
    batch_size: int
    engine: str | None


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
    from odyssey.store.select import add_selection

    spec = project.spec
    settings = spec.select
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
    with store.run("select", spec.as_dict(), config) as run:
        ctx = _Zeroshot(project, run, examples, cfg, data, split, batch_size or settings.batch_size, engine)
        rows = [_evaluate_candidate(ctx, ref) for ref in refs]
        primary = spec.scope.primary_metric
        ranking, chosen, notes = _rank(rows, primary)
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


def _blank_row(ref: str, info, root) -> dict:
    """A candidate's row before (or without) an evaluation: what describing the model tells."""
    from odyssey.models import parse_ref

    try:
        slug = parse_ref(ref, root).slug
    except OdysseyError:
        slug = ref
    return {
        "name": f"{slug}:zero-shot",
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


def _evaluate_candidate(ctx: _Zeroshot, ref: str) -> dict:
    """One candidate through the harness, stored with its outputs and metrics; a candidate that cannot run
    gets the reason as its note instead of stopping the comparison."""
    from odyssey.engines import open_engine
    from odyssey.evaluate import check_gates, gates_pass, run_harness
    from odyssey.evaluate.checks import headline
    from odyssey.models import describe

    project, run, store = ctx.project, ctx.run, ctx.project.store
    spec = project.spec
    info = describe(ref, project.root)
    row = _blank_row(ref, info, project.root)
    name = row["name"]
    if not info.available:
        row["note"] = f"not available: {info.note}"
        return row
    try:
        with open_engine(
            ref,
            root=project.root,
            evaluate=spec.evaluate,
            engine=ctx.engine,
            dtype=spec.evaluate.dtype,
            batch_size=ctx.batch_size,
            log_dir=project.state_dir,
        ) as loaded:  # one model in memory at a time
            result = run_harness(
                loaded,
                ctx.examples,
                ctx.prompt,
                spec.scope,
                pool=[],
                description=f"{name} on {ctx.split}",
                batch_size=ctx.batch_size,
            )
            n_params = loaded.n_params or info.n_params
    except OdysseyError as exc:
        row["note"] = exc.message
        return row
    result.metrics["n_params"] = n_params
    fingerprint = {"prompt": ctx.prompt.as_dict(), "data": ctx.data.fingerprint}
    cand_id = store.upsert_candidate(name, "select", ref, fingerprint, None, run.id)
    store.add_outputs(run.id, result.rows, candidate_id=cand_id, split=ctx.split)
    run.log_metrics(result.metrics, candidate_id=cand_id, split=ctx.split)
    gates = check_gates(spec.scope, result.metrics)
    row.update(
        metrics=result.metrics,
        gates=gates,
        passed=gates_pass(gates),
        n_params=n_params,
        note="; ".join(headline(n) for n in result.notes),
    )
    return row


def _rank(rows: list[dict], primary: str) -> tuple[list[Ranked], str | None, list[str]]:
    """(the ranking, the chosen candidate's name, notes on the choice)."""
    rows.sort(key=lambda r: rank_key(primary, r))
    ranking = [Ranked(rank=i + 1, **r) for i, r in enumerate(rows)]
    runnable = [r for r in ranking if primary in r.metrics]
    chosen = runnable[0].name if runnable else None
    notes: list[str] = []
    if runnable and not any(r.passed for r in runnable):
        notes.append(f"no candidate passes every gate; {chosen} scores best on {primary}")
    if not runnable:
        notes.append("no candidate could be evaluated; see the notes per model")
    return ranking, chosen, notes
