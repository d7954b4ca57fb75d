"""``odyssey run``: execute the plan step by step, skipping steps whose inputs are unchanged (cached),
resuming the step a killed run left unfinished, and ending with the board, the gains and a report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from odyssey import ui
from odyssey.errors import OdysseyError
from odyssey.pipeline.plan import Plan, Step, check_parents, input_hash, make_plan, select_steps, step_inputs
from odyssey.pipeline.stages import STAGES, Outcome, Parent, StepContext


@dataclass
class StepStatus:
    step: str
    stage: str
    parent: str | None
    status: str  # cached | ran | resumed | skipped (not selected) | will run | will resume | cached (dry run)
    reason: str = ""
    wall_s: float | None = None
    candidates: list[str] = field(default_factory=list)
    estimate: dict | None = None


@dataclass
class PipelineResult:
    steps: list[StepStatus]
    dry_run: bool
    profile: str | None
    board: dict | None = None
    gains: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def step_project(project, spec):
    """A Project on the same folder and store whose spec is ``spec`` (the profile and overrides applied)."""
    from odyssey.project import Project

    proj = Project(project.root, spec)
    proj.__dict__["store"] = project.store  # one store connection (cached_property's slot)
    return proj


def run_pipeline(
    project,
    *,
    profile: str | None = None,
    from_step: str | None = None,
    only: str | None = None,
    dry_run: bool = False,
    stages: dict | None = None,
) -> PipelineResult:
    """Run the lifecycle odyssey.yaml describes (see the module docstring). ``stages`` replaces the runners
    of the mapping table by name (tests)."""
    from odyssey.pipeline.report import finish
    from odyssey.store.pipeline import mark_interrupted

    started = time.perf_counter()
    plan = make_plan(project, profile)
    base = step_project(project, plan.spec)
    check_parents(base, plan)
    selected = select_steps(base, plan, from_step, only)
    runners = {name: (stages or {}).get(name, stage.run) for name, stage in STAGES.items()}
    mark_interrupted(base.store)
    refuse_a_second_run(base.store)
    if dry_run:
        return PipelineResult(
            dry_run_statuses(base, plan, selected), True, profile, wall_s=time.perf_counter() - started
        )
    refuse_what_does_not_fit(base, plan, selected)
    statuses: list[StepStatus] = []
    outcomes: dict[str, Outcome] = {}
    with base.store.run(
        "pipeline",
        plan.spec.as_dict(),
        {"profile": profile, "from": from_step, "only": only, "steps": [s.id for s in plan.steps]},
    ) as prun:
        for step in plan.steps:
            statuses.append(
                _do_step(base, plan, step, step.id in selected, bool(from_step or only), outcomes, runners, prun.id)
            )
        result = PipelineResult(statuses, False, profile)
        finish(base, plan, result, outcomes, prun)
    result.wall_s = time.perf_counter() - started
    return result


def _do_step(
    base,
    plan: Plan,
    step: Step,
    selected: bool,
    forced: bool,
    outcomes: dict[str, Outcome],
    runners: dict,
    pipeline_run_id: int,
) -> StepStatus:
    from odyssey.store.pipeline import latest_step, start_step

    store = base.store
    if not selected:  # --from / --only: an unselected step's last result stands in for it
        return _stand_in(store, step, outcomes)
    project = step_project(base, step.spec)
    parent = resolve_parent(project, step, outcomes, plan)
    needs = consumed(step, plan, outcomes)
    identity = _needs_identity(store, step, needs, outcomes)
    inputs = step_inputs(
        step,
        data_fingerprint=project.dataset().fingerprint,
        parent=parent.as_dict() if parent else None,
        needs=identity,
    )
    digest = input_hash(inputs)
    done = latest_step(store, step.id, status="succeeded", input_hash=digest)
    if done and not forced and _still_there(store, done):
        return _cached(step, parent, done, digest, outcomes)
    last = latest_step(store, step.id, input_hash=digest)
    resume = bool(last and last["status"] in {"interrupted", "failed"})
    ui.say(
        f"{'resuming' if resume else 'running'}: {step.id} ({step.stage}"
        + (f", from {parent_label(parent)}" if parent else "")
        + ")"
    )
    record = start_step(
        store,
        step=step.id,
        stage=step.stage,
        input_hash=digest,
        inputs=inputs,
        pipeline_run_id=pipeline_run_id,
        resumed=resume,
    )
    earlier = [(s, outcomes[s.id]) for s in plan.steps if s.id in outcomes]
    ctx = StepContext(project, step, parent, resume, needs, earlier)
    outcome, wall = _execute(store, record, runners, ctx)
    outcomes[step.id] = outcome
    ui.say(f"done: {step.id} in {wall:.1f} s")
    reason = "forced (--from/--only)" if forced and done else (f"last attempt {last['status']}" if last else "")
    return StepStatus(
        step.id, step.stage, parent_label(parent), "resumed" if resume else "ran", reason, wall, outcome.candidates
    )


def _stand_in(store, step: Step, outcomes: dict[str, Outcome]) -> StepStatus:
    """An unselected step (--from/--only): its last successful result stands in for it."""
    from odyssey.store.pipeline import latest_step

    last = latest_step(store, step.id, status="succeeded")
    if last is None:
        raise OdysseyError(
            f"step {step.id!r} has never finished, and the steps after it need what it makes",
            hint="run `odyssey run` without --from/--only once",
        )
    outcomes[step.id] = Outcome.from_dict(last["outcome"])
    return StepStatus(
        step.id,
        step.stage,
        step.parent,
        "skipped",
        "not selected (--from/--only): its last result",
        candidates=outcomes[step.id].candidates,
    )


def _cached(step: Step, parent: Parent | None, done: dict, digest: str, outcomes: dict[str, Outcome]) -> StepStatus:
    """A step whose inputs are unchanged since ``done`` (its last success): that outcome, not a run."""
    outcomes[step.id] = Outcome.from_dict(done["outcome"])
    ui.say(f"cached: {step.id} (inputs unchanged since {done['finished_at'][:19]}; hash {digest[:10]})")
    return StepStatus(
        step.id,
        step.stage,
        parent_label(parent),
        "cached",
        f"hash {digest[:10]}",
        done.get("wall_s"),
        outcomes[step.id].candidates,
    )


def _execute(store, record, runners: dict, ctx: StepContext) -> tuple[Outcome, float]:
    """The stage's runner on ``ctx``; the step's record is finished either way (a failure is re-raised)."""
    from odyssey.store.pipeline import finish_step

    t0 = time.perf_counter()
    try:
        outcome = runners[ctx.step.stage](ctx)
    except BaseException as exc:
        finish_step(store, record, "failed", wall_s=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
        raise
    wall = time.perf_counter() - t0
    finish_step(store, record, "succeeded", outcome=outcome.as_dict(), wall_s=wall)
    return outcome, wall


def parent_label(parent: Parent | None) -> str | None:
    return (parent.name or parent.model_ref) if parent else None


def _still_there(store, record: dict) -> bool:
    """A cached step's candidates must still be in the store (a deleted database, a renamed candidate)."""
    return all(store.candidate(name) is not None for name in record["outcome"].get("candidates", []))


def resolve_parent(project, step: Step, outcomes: dict[str, Outcome], plan: Plan | None = None) -> Parent | None:
    """The step's parent now: an earlier step's candidate, the best of the earlier steps (of one stage, for
    ``best:STAGE``), a stored candidate or a model."""
    store, which = project.store, step.parent
    if which is None:
        return None
    if which.startswith("best:") and plan is not None:
        stage = which.removeprefix("best:")
        of_stage = {s.id for s in plan.steps if s.stage == stage}
        earlier = {k: o for k, o in outcomes.items() if k in of_stage and o.candidates}
        # none scored (evaluation off): the latest candidate those steps made
        best = best_of_earlier_steps(project, earlier, fallback=False) or next(
            (o.candidates[-1] for o in reversed(earlier.values())), None
        )
        if best is None:
            raise OdysseyError(
                f"step {step.id!r} starts from the best {stage} candidate, and no earlier {stage} step made one",
                hint=f"run the {stage} steps first (`odyssey run --from {stage}`)",
            )
        return _candidate_parent(store, best)
    if which in outcomes:
        made = outcomes[which].candidates
        if not made:
            raise OdysseyError(
                f"step {step.id!r} starts from step {which!r}, which makes no candidate",
                hint="name a step that makes one (prompt, finetune, align, optimize) or 'best'",
            )
        return _candidate_parent(store, made[-1])
    if which == "model":
        spec = project.spec
        ref = (spec.adapt.model if step.stage == "finetune" else None) or spec.prompt.model or project.default_model()
        return Parent(ref)
    if which == "best":
        best = best_of_earlier_steps(project, outcomes)
        return _candidate_parent(store, best) if best else Parent(project.default_model())
    if store.candidate(which) is not None:
        return _candidate_parent(store, which)
    entries = {e.name: e.ref for e in project.spec.model_entries() if e.name}
    return Parent(entries.get(which, which))


def best_of_earlier_steps(project, outcomes: dict[str, Outcome], fallback: bool = True) -> str | None:
    """'best' for a step: the store's one rule (Store.best) over the candidates the earlier steps made, on
    the metrics their own runs logged. Not the latest metrics: the evaluate step re-scores candidates
    afterwards, and a rerun with nothing changed must pick the same parent (and stay cached). The
    store's best when the earlier steps scored nothing (unless ``fallback`` is false)."""
    from odyssey.store.candidates import best

    store = project.store
    made = {n for o in outcomes.values() for n in o.candidates}
    runs = sorted({r for o in outcomes.values() for r in o.runs})
    pool = _Pool(store, made, runs)
    found = best(pool, "test", project.spec.scope.primary_metric, gates=project.spec.scope.gate_list())
    if found is None and fallback:
        found = store.best()
    return found.name if found else None


class _Pool:
    """The store seen through some candidates and the metrics some runs logged, so that Store.best's rule
    ranks only those (Store.best narrows by stage, not by name or run)."""

    def __init__(self, store, names: set[str], runs: list[int]):
        self._store, self._names, self._runs = store, names, runs

    def candidates(self) -> list[dict]:
        return [row for row in self._store.candidates() if row["name"] in self._names]

    def latest_metrics(self, candidate_id: int, split: str | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for run_id in self._runs:  # in run order, each run's rows in order: the later value wins
            for m in self._store.metrics_for_run(run_id):
                if m["candidate_id"] == candidate_id and (split is None or m["split"] == split):
                    out[m["name"]] = m["value"]
        return out

    def candidate_obj(self, name_or_id):
        return self._store.candidate_obj(name_or_id)


def _candidate_parent(store, name: str) -> Parent:
    row = store.candidate(name)
    if row is None:
        raise OdysseyError(f"candidate {name!r} is no longer in the store", hint="run `odyssey run` again")
    return Parent(row["model_ref"], row["name"], row["run_id"])


def consumed(step: Step, plan: Plan, outcomes: dict[str, Outcome]) -> dict[str, Outcome]:
    """stage -> outcome of the latest earlier step of each stage this step consumes (a reward model's pairs)."""
    out = {}
    before = plan.steps[: plan.steps.index(step)]
    for stage in STAGES[step.stage].needs:
        for earlier in reversed(before):
            if earlier.stage == stage and earlier.id in outcomes:
                out[stage] = outcomes[earlier.id]
                break
    return out


def _needs_identity(store, step: Step, needs: dict[str, Outcome], outcomes: dict[str, Outcome]) -> dict:
    identity = {stage: outcome.extra for stage, outcome in needs.items()}
    if step.stage == "evaluate":  # its inputs are every candidate the earlier steps made, as they are now
        names = dict.fromkeys(n for o in outcomes.values() for n in o.candidates)
        rows = {n: store.candidate(n) or {} for n in names}
        identity["candidates"] = [(n, row.get("model_ref"), row.get("run_id")) for n, row in rows.items()]
    return identity


def refuse_a_second_run(store) -> None:
    """Two `odyssey run`s on one project would train into the same folders: the second is refused."""
    import os

    from odyssey.store.pipeline import running_steps

    others = [r for r in running_steps(store) if r["pid"] != os.getpid()]  # mark_interrupted has cleared the dead
    if others:
        raise OdysseyError(
            f"another `odyssey run` (pid {others[0]['pid']}) is running step {others[0]['step']!r} in this project",
            hint="wait for it, or stop it; a stopped run resumes where it was",
        )


# ---- dry run and the memory check ---------------------------------------------------------------------


def dry_run_statuses(base, plan: Plan, selected: set[str]) -> list[StepStatus]:
    """Each step: cached or not as far as can be told before anything runs, and the planner's estimate for
    training steps. A step after one that will run is marked as running too (its parent changes)."""
    from odyssey.store.pipeline import latest_step

    statuses, outcomes, changed = [], {}, False
    for step in plan.steps:
        estimate = estimate_step(base, plan, step) if step.trains else None
        last = latest_step(base.store, step.id, status="succeeded")
        status, reason = "will run", "never run"
        if step.id not in selected:
            status, reason = "skipped", "not selected (--from/--only)"
        elif last is not None:
            project = step_project(base, step.spec)
            try:
                parent = resolve_parent(project, step, outcomes, plan)
            except OdysseyError:
                parent = None
            inputs = step_inputs(
                step,
                data_fingerprint=project.dataset().fingerprint,
                parent=parent.as_dict() if parent else None,
                needs=_needs_identity(base.store, step, consumed(step, plan, outcomes), outcomes),
            )
            if input_hash(inputs) == last["input_hash"] and not changed:
                status, reason = "cached", f"inputs unchanged since {last['finished_at'][:19]}"
            else:
                status, reason = "will run", ("an earlier step runs first" if changed else "its inputs changed")
            resumable = latest_step(base.store, step.id, input_hash=input_hash(inputs))
            if status == "will run" and resumable and resumable["status"] in {"interrupted", "failed"}:
                status, reason = "will resume", f"last attempt {resumable['status']}"
        if last is not None:
            outcomes[step.id] = Outcome.from_dict(last["outcome"])
        changed = changed or status in {"will run", "will resume"}
        statuses.append(StepStatus(step.id, step.stage, step.parent, status, reason, estimate=estimate))
    return statuses


def estimate_step(base, plan: Plan, step: Step) -> dict | None:
    """The planner's memory and time for a training step on the scope's hardware (constraints.hardware:
    its ram:/vram: if given, else this machine's). Not constraints.memory_gb: that is the serving limit
    (a gate on the candidate), and training needs more (SmolLM2-135M LoRA on 2,048-token batches: about
    7 GB by the planner, against the template's memory_gb 4)."""
    from odyssey.models.hardware import Hardware
    from odyssey.select.planner import plan as plan_job

    spec = step.spec
    method, batch, seq, tokens = STAGES[step.stage].estimate(spec)
    hardware = Hardware.parse(spec.scope.constraints.hardware)
    ref = spec.adapt.model or spec.prompt.model or base.default_model()
    # the adapter `odyssey finetune` trains; the align stages' policies take no LoRA dropout
    lora = spec.adapt.lora if step.stage == "finetune" else None
    try:
        job = plan_job(
            ref,
            method,
            hardware,
            batch=batch,
            seq=seq,
            tokens=tokens,
            lora_r=lora.r if lora else 8,
            lora_dropout=lora.dropout if lora else 0.0,
            root=base.root,
        )
    except (OdysseyError, OSError, ValueError) as exc:  # e.g. a hub model offline: no estimate, no refusal
        return {"model": ref, "method": method, "error": str(exc).splitlines()[0]}
    return {
        "model": ref,
        "method": method,
        "memory_gb": round(job.total_gb, 3),
        "available_gb": job.available_gb,
        "fits": job.fits,
        "hours": job.hours,
        "tokens": job.tokens,
        "tokens_per_s": round(job.tokens_per_s, 1),
        "notes": job.notes,
    }


def refuse_what_does_not_fit(base, plan: Plan, selected: set[str]) -> None:
    """Before anything starts: every selected training step must fit the scope's hardware."""
    from odyssey.pipeline.plan import _problem

    for step in plan.steps:
        if step.id not in selected or not step.trains:
            continue
        estimate = estimate_step(base, plan, step)
        if estimate and estimate.get("fits") is False:
            raise _problem(
                base,
                ("scope", "constraints", "hardware"),
                f"step {step.id!r} ({estimate['method']} on {estimate['model']}) needs about "
                f"{estimate['memory_gb']:.2f} GB; {estimate['available_gb']:.2f} GB is usable on "
                f"{plan.spec.scope.constraints.hardware!r}",
                plan.spec.scope.constraints.hardware,
                hint="use a smaller model, LoRA, shorter sequences or smaller batches, or more memory "
                "(e.g. hardware: 'cpu:2,ram:32gb'); `odyssey run --dry-run` shows each step's estimate",
            )
