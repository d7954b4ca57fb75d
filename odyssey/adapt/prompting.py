"""Prompt engineering and in-context learning: score zero-, one- and few-shot variants with
each example-selection strategy on the validation split, keep the best as the prompt
candidate, and report it on the test split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from odyssey import ui
from odyssey.errors import OdysseyError
from odyssey.prompts import PromptConfig


@dataclass
class Variant:
    name: str
    shots: int
    selection: str
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def copies_input(self) -> bool:
        from odyssey.evaluate.checks import COPY_WARN_RATE

        return self.metrics.get("copy_rate", 0.0) > COPY_WARN_RATE


def pick_best(variants: list[Variant], primary: str) -> Variant:
    """The highest-scoring variant among those whose answers do not mostly copy the input; only
    when every variant copies does the plain best score win (and its warning stays on record)."""
    clean = [v for v in variants if not v.copies_input] or variants
    return max(clean, key=lambda v: v.metrics.get(primary, float("-inf")))


@dataclass
class PromptResult:
    run_id: int
    model_ref: str
    candidate: str
    primary_metric: str
    variants: list[Variant]
    best: Variant
    test_metrics: dict[str, float]
    gates: list[dict]
    report: dict[str, str]

    def as_dict(self) -> dict:
        return asdict(self)


def variants_from_spec(spec) -> list[tuple[int, str]]:
    out = []
    for shots in spec.prompt.shots:
        if shots == 0:
            out.append((0, "fixed"))
        else:
            out.extend((shots, sel) for sel in spec.prompt.selection)
    return list(dict.fromkeys(out))  # keep order, drop repeats


@dataclass
class _Search:
    """What one prompt search scores: the model, the data, and the variants to try."""

    spec: object  # the project's spec with the call's shots/selection overrides
    ref: str
    slug: str
    data: object  # the project's dataset
    pool: list  # the train split: where the shots come from
    validation: list
    test: list
    plan: list[tuple[int, str]]  # (shots, selection) per variant
    batch_size: int

    @property
    def scope(self):
        return self.spec.scope

    @property
    def primary(self) -> str:
        return self.spec.scope.primary_metric

    @property
    def candidate(self) -> str:
        return f"{self.slug}:prompt"


def prompt_search(
    project,
    *,
    model: str | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    shots: list[int] | None = None,
    selection: list[str] | None = None,
    batch_size: int | None = None,
    engine: str | None = None,
) -> PromptResult:
    from odyssey.engines import open_engine

    search = _plan_search(project, model, limit, test_limit, shots, selection, batch_size)
    spec, store = search.spec, project.store
    config = {
        "model": search.ref,
        "variants": search.plan,
        "validation_n": len(search.validation),
        "test_n": len(search.test),
        "data": search.data.fingerprint,
    }
    with (
        store.run("prompt", spec.as_dict(), config) as run,
        open_engine(
            search.ref,
            root=project.root,
            evaluate=spec.evaluate,
            engine=engine,
            dtype=spec.evaluate.dtype,
            batch_size=search.batch_size,
            log_dir=project.state_dir,
        ) as loaded,
    ):
        config["engine"] = loaded.info.as_dict()
        variants, configs = _score_variants(search, store, run, loaded)
        best = pick_best(variants, search.primary)
        name = search.candidate
        cand_id = store.upsert_candidate(
            name,
            "prompt",
            search.ref,
            {"prompt": configs[best.name].as_dict(), "data": search.data.fingerprint, "validation": best.metrics},
            None,
            run.id,
        )
        run.log_metrics(best.metrics, candidate_id=cand_id, split="validation")
        test_result, gates, report = _test_best(
            project, search, run, loaded, variants, best, configs[best.name], cand_id
        )
        _write_variant_table(run, variants, search.primary)
        run.set_summary(
            {
                "best": best.name,
                "variants": [asdict(v) for v in variants],
                "test": test_result.metrics,
                "engine": config["engine"],
            }
        )
    return PromptResult(run.id, search.ref, name, search.primary, variants, best, test_result.metrics, gates, report)


def _plan_search(project, model, limit, test_limit, shots, selection, batch_size) -> _Search:
    """The spec with the call's overrides, the model, the data splits and the variants; too few
    training examples for the largest shot count is an error."""
    from odyssey.models import parse_ref

    spec = project.spec
    overrides = {k: v for k, v in {"shots": shots, "selection": selection}.items() if v}
    if overrides:
        spec = spec.model_copy(update={"prompt": spec.prompt.model_copy(update=overrides)})
    pspec = spec.prompt
    ref = model or pspec.model or project.default_model()
    slug = parse_ref(ref, project.root).slug
    data = project.dataset()
    pool = data.splits.get("train", [])
    validation = data.split("validation")[: limit or pspec.limit or None]
    test = data.split("test")[: test_limit or pspec.test_limit or None]
    plan = variants_from_spec(spec)
    too_many = [s for s, _ in plan if s > len(pool)]
    if too_many:
        raise OdysseyError(
            f"{max(too_many)}-shot prompts need {max(too_many)} training examples; the train split has {len(pool)}",
            hint="lower prompt.shots or add training data",
        )
    return _Search(spec, ref, slug, data, pool, validation, test, plan, batch_size or pspec.batch_size)


def _score_variants(search: _Search, store, run, loaded) -> tuple[list[Variant], dict[str, PromptConfig]]:
    """Each planned variant scored on the validation split, its outputs and metrics recorded on the run."""
    from odyssey.evaluate import run_harness
    from odyssey.evaluate.checks import headline

    scope, pspec, primary = search.scope, search.spec.prompt, search.primary
    generation = pspec.generation.model_dump()
    variants: list[Variant] = []
    configs: dict[str, PromptConfig] = {}
    for n_shots, strategy in search.plan:
        cfg = PromptConfig.default(
            scope.task,
            scope.labels,
            pspec.instruction,
            shots=n_shots,
            selection=strategy,
            system=pspec.system,
            seed=pspec.seed,
            generation=generation,
        )
        result = run_harness(
            loaded,
            search.validation,
            cfg,
            scope,
            pool=search.pool,
            batch_size=search.batch_size,
            description=f"{cfg.name} on validation",
        )
        variants.append(Variant(cfg.name, n_shots, strategy, result.metrics, result.notes, result.warnings))
        configs[cfg.name] = cfg
        store.add_outputs(
            run.id, [{**r, "example_id": f"{cfg.name}/{r['example_id']}"} for r in result.rows], split="validation"
        )
        run.log_metrics({f"{cfg.name}/{k}": v for k, v in result.metrics.items()}, split="validation")
        ui.say(
            f"  {cfg.name:<22} {primary}={result.metrics.get(primary, 0):.4f}"
            + (f"  ({'; '.join(headline(n) for n in result.notes)})" if result.notes else "")
        )
    return variants, configs


def _test_best(project, search: _Search, run, loaded, variants, best: Variant, best_cfg, cand_id):
    """(harness result, gates, report) of the best variant on the test split, recorded on its candidate."""
    from odyssey.evaluate import check_gates, run_harness
    from odyssey.evaluate.report import write_report

    store, primary = project.store, search.primary
    test_result = run_harness(
        loaded,
        search.test,
        best_cfg,
        search.scope,
        pool=search.pool,
        batch_size=search.batch_size,
        description=f"{best.name} on test",
    )
    store.add_outputs(run.id, test_result.rows, candidate_id=cand_id, split="test")
    run.log_metrics(test_result.metrics, candidate_id=cand_id, split="test")
    gates = check_gates(search.scope, test_result.metrics)
    skipped = [v.name for v in variants if v.copies_input and not best.copies_input]
    test_result.notes = [
        f"best prompt: {best.name} (by validation {primary}"
        + (f"; not {', '.join(skipped)}, whose answers copy the input)" if skipped else ")")
    ] + test_result.notes
    report = write_report(project, run, search.candidate, "test", test_result, gates)
    return test_result, gates, report


def _write_variant_table(run, variants: list[Variant], primary: str):
    """variants.json and a bar chart of the primary metric per variant."""
    import matplotlib

    out = run.artifacts_dir
    (out / "variants.json").write_text(json.dumps([asdict(v) for v in variants], indent=2))
    run.add_artifact(out / "variants.json", "prompt-variants")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only once the backend is chosen: no display is needed

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(variants) + 2), 3.6), layout="constrained")
    values = [v.metrics.get(primary, 0.0) for v in variants]
    bars = ax.bar([v.name for v in variants], values, color="steelblue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel(f"{primary} (validation)")
    ax.set_title("prompt variants")
    ax.tick_params(axis="x", rotation=20)
    fig.savefig(out / "variants.png", dpi=120)
    plt.close(fig)
    run.add_artifact(out / "variants.png", "prompt-variants-plot")
