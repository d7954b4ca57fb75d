"""The one mapping table of ``odyssey run``: each stage a step may name -> the entry function it calls,
the spec sections its inputs hash, its default parent, and how the planner estimates it.

Entry functions are imported inside each runner (``odyssey --help`` stays fast). A runner gets a
:class:`StepContext` and returns an :class:`Outcome` (what the step made, recorded in the store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Sections every stage's inputs include: what is scored and how (the data itself is its fingerprint).
COMMON_SECTIONS = ("scope.task", "scope.labels", "scope.metrics")


@dataclass
class Outcome:
    """What a step made: candidate names (the last one is what a child step starts from), run ids, extras."""

    candidates: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"candidates": self.candidates, "runs": self.runs, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> Outcome:
        return cls(list(data.get("candidates", [])), list(data.get("runs", [])), dict(data.get("extra", {})))


@dataclass
class Parent:
    """A step's resolved parent: a stored candidate (name, model_ref, the run that made it) or a bare model."""

    model_ref: str
    name: str | None = None
    run_id: int | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "model_ref": self.model_ref, "run_id": self.run_id}


@dataclass
class StepContext:
    project: Any  # a Project whose spec has the profile and the step's overrides applied
    step: Any  # plan.Step
    parent: Parent | None
    resume: bool
    needs: dict[str, Outcome]  # stage -> outcome of the step this one consumes (preferences, reward)
    earlier: list[tuple[Any, Outcome]]  # (step, outcome) of every earlier step (the evaluate step uses them)


@dataclass
class Stage:
    name: str
    run: Callable[[StepContext], Outcome]
    section: str | None  # where a step's `with:` overrides go (dotted spec path)
    hashed: tuple[str, ...] = ()  # spec sections that are this stage's inputs
    args: tuple[str, ...] = ()  # `with:` keys that are entry-function arguments, not spec fields
    default_parent: str | None = "best"  # "model": the project's model; "best": the board's; None: no parent
    follows: tuple[str, ...] = ()  # an earlier step of these stages is the default parent instead
    needs: tuple[str, ...] = ()  # stages whose latest earlier step's outcome this one consumes
    estimate: Callable | None = None  # (spec) -> (method, batch, seq, tokens) for the planner (training stages)


def _start(ctx: StepContext):
    from odyssey.align.common import starting_candidate

    return starting_candidate(ctx.project, ctx.parent.name if ctx.parent and ctx.parent.name else None)


def _parent_name_or_ref(ctx: StepContext) -> str | None:
    return (ctx.parent.name or ctx.parent.model_ref) if ctx.parent else None


# ---- runners: one per stage, each a thin call of the stage's entry function ----------------------------


def run_scope(ctx: StepContext) -> Outcome:
    """What `odyssey validate` checks (the spec, a sample of the data, every model reference), then the data."""
    from odyssey.errors import SpecError
    from odyssey.project import check_project

    _, report = check_project(ctx.project.spec_path)
    if not report.ok:
        raise SpecError(
            f"{ctx.project.spec_path} has {len(report.problems)} problem(s):",
            problems=[str(p) for p in report.problems],
        )
    data = ctx.project.dataset()
    return Outcome(
        extra={"data": data.fingerprint, "rows": {k: len(v) for k, v in data.splits.items()}, "checked": report.notes}
    )


def run_prompt(ctx: StepContext) -> Outcome:
    from odyssey.adapt import prompt_search

    result = prompt_search(ctx.project, model=ctx.parent.model_ref if ctx.parent else None)
    return Outcome([result.candidate], [result.run_id])


def run_finetune(ctx: StepContext) -> Outcome:
    from odyssey.adapt import finetune

    result = finetune(ctx.project, model=ctx.parent.model_ref if ctx.parent else None, resume=ctx.resume)
    return Outcome([result.candidate], [result.run_id], {"resumed_from": result.resumed_from})


def run_preferences(ctx: StepContext) -> Outcome:
    from odyssey.align import build_preferences

    pset = build_preferences(ctx.project, start=_start(ctx))
    return Outcome(extra={"preference_set": pset.id, "sha256": pset.sha256, "pairs": len(pset.pairs)})


def run_reward(ctx: StepContext) -> Outcome:
    from odyssey.align import train_reward_model

    pset = ctx.needs.get("preferences")
    result = train_reward_model(
        ctx.project, preference_set=pset.extra["preference_set"] if pset else None, resume=ctx.resume, start=_start(ctx)
    )
    return Outcome(
        runs=[result.run_id] if result.run_id else [],
        extra={"reward_model": result.reward_model_id, "metrics": result.metrics},
    )


def _preference_runner(method: str) -> Callable[[StepContext], Outcome]:
    """The runner of an offline preference method (dpo, kto, orpo, simpo) on the step's preference pairs."""

    def run(ctx: StepContext) -> Outcome:
        from odyssey.align import train_preference

        pset = ctx.needs.get("preferences")
        result = train_preference(
            ctx.project,
            method,
            preference_set=pset.extra["preference_set"] if pset else None,
            start=ctx.parent.name if ctx.parent else None,
            resume=ctx.resume,
            evaluate=bool(ctx.step.args.get("evaluate", False)),
        )
        return Outcome([result.candidate], [result.run_id])

    return run


def run_ppo(ctx: StepContext) -> Outcome:
    from odyssey.align import train_ppo

    reward = ctx.needs.get("reward")
    result = train_ppo(
        ctx.project,
        reward_model=reward.extra["reward_model"] if reward else None,
        start=ctx.parent.name if ctx.parent else None,
        resume=ctx.resume,
        evaluate=bool(ctx.step.args.get("evaluate", False)),
    )
    return Outcome([result.candidate], [result.run_id])


def run_quantize(ctx: StepContext) -> Outcome:
    from odyssey.optimize import quantize

    result = quantize(
        ctx.project,
        ctx.step.args["to"],
        start_from=_parent_name_or_ref(ctx),
        measure=bool(ctx.step.args.get("measure", True)),
    )
    return Outcome([result.candidate], [result.run_id])


def run_distill(ctx: StepContext) -> Outcome:
    from odyssey.optimize import distill

    result = distill(
        ctx.project,
        teacher=_parent_name_or_ref(ctx),
        resume=ctx.resume,
        measure=bool(ctx.step.args.get("measure", True)),
    )
    return Outcome([result.candidate], [result.run_id])


def run_prune(ctx: StepContext) -> Outcome:
    from odyssey.optimize import prune

    result = prune(
        ctx.project,
        start_from=_parent_name_or_ref(ctx),
        resume=ctx.resume,
        measure=bool(ctx.step.args.get("measure", True)),
    )
    return Outcome([result.candidate], [result.run_id])


def run_evaluate(ctx: StepContext) -> Outcome:
    """Every candidate the earlier steps made, with its parent, on the test split through one harness: the
    board and the gains then compare like with like. A prompt candidate's parent is its model zero-shot."""
    from odyssey.evaluate import evaluate_candidate

    pairs = evaluation_pairs(ctx)
    evaluations: dict[str, int] = {}
    for child, parent in pairs:
        for name in (parent, child):
            if name in evaluations:
                continue
            if name.startswith("model:"):  # the zero-shot baseline of a prompt candidate
                result = evaluate_candidate(ctx.project, model=name.removeprefix("model:"), split="test")
                evaluations[name] = result.run_id
                evaluations[result.candidate] = result.run_id
            else:
                evaluations[name] = evaluate_candidate(ctx.project, candidate=name, split="test").run_id
    resolved = [(c, _zero_shot_name(ctx, p)) for c, p in pairs]
    return Outcome(
        runs=sorted(set(evaluations.values())),
        extra={"evaluations": {k: v for k, v in evaluations.items() if not k.startswith("model:")}, "pairs": resolved},
    )


def _zero_shot_name(ctx: StepContext, name: str) -> str:
    if not name.startswith("model:"):
        return name
    from odyssey.models import parse_ref

    return f"{parse_ref(name.removeprefix('model:'), ctx.project.root).slug}:zero-shot"


def evaluation_pairs(ctx: StepContext) -> list[tuple[str, str]]:
    """(candidate, parent) for each candidate the earlier steps made (or the step's parent alone); the
    parent is the stored one, or ``model:<ref>`` (its model zero-shot) for a candidate without one."""
    store = ctx.project.store
    if ctx.step.parent_written and ctx.parent and ctx.parent.name:
        names = [ctx.parent.name]
    else:
        names = list(dict.fromkeys(n for _, outcome in ctx.earlier for n in outcome.candidates))
    pairs = []
    for name in names:
        row = store.candidate(name)
        if row is None:
            continue
        parent = store.candidate(row["parent_id"]) if row["parent_id"] else None
        pairs.append((name, parent["name"] if parent else f"model:{row['model_ref']}"))
    return pairs


# ---- planner inputs of the training stages: (method, batch, seq, tokens) --------------------------------


def _finetune_job(spec):
    a = spec.adapt
    batch = max(1, min(a.batch_size, a.batch_tokens // a.max_seq_len))  # batches hold batch_tokens tokens
    tokens = a.max_steps * batch * a.max_seq_len if a.max_steps else None
    return ("full" if a.method == "full" else "lora"), batch, a.max_seq_len, tokens


def _preference_job(method: str):
    def estimate(spec):
        d = getattr(spec.align, method)
        # two rows per item go through the policy together: chosen and rejected (KTO: the answer and its KL row)
        tokens = int(2 * spec.align.pairs * d.epochs * d.max_length)
        return ("lora" if d.lora else "full"), 2 * d.micro_batch, d.max_length, tokens

    return estimate


def _reward_job(spec):
    r = spec.align.reward
    tokens = int(2 * spec.align.pairs * r.epochs * r.max_length)
    return ("lora" if r.lora else "full"), 2 * r.micro_batch, r.max_length, tokens


def _ppo_job(spec):
    p = spec.align.ppo
    seq = 256 + p.max_new_tokens  # prompt + answer, roughly
    return "lora", p.batch_size, seq, p.steps * p.batch_size * seq * (1 + p.ppo_epochs)


def _distill_job(spec):
    d = spec.optimize.distill
    return "full", d.batch_size, d.max_length, d.steps * d.batch_size * d.max_length


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("scope", run_scope, None, ("scope",), default_parent=None),
        Stage("prompt", run_prompt, "prompt", ("prompt",), default_parent="model"),
        Stage(
            "finetune",
            run_finetune,
            "adapt",
            ("adapt", "evaluate"),
            default_parent="model",
            follows=("prompt",),
            estimate=_finetune_job,
        ),
        Stage(
            "preferences",
            run_preferences,
            "align",
            ("align.preferences", "align.pairs", "align.judge", "evaluate.generation"),
            follows=("finetune",),
        ),
        Stage(
            "reward",
            run_reward,
            "align.reward",
            ("align.reward",),
            follows=("finetune",),
            needs=("preferences",),
            estimate=_reward_job,
        ),
        *(
            Stage(
                method,
                _preference_runner(method),
                f"align.{method}",
                (f"align.{method}",),
                args=("evaluate",),
                follows=("finetune",),
                needs=("preferences",),
                estimate=_preference_job(method),
            )
            for method in ("dpo", "kto", "orpo", "simpo")
        ),
        Stage(
            "ppo",
            run_ppo,
            "align.ppo",
            ("align.ppo",),
            args=("evaluate",),
            follows=("finetune",),
            needs=("reward",),
            estimate=_ppo_job,
        ),
        Stage(
            "quantize",
            run_quantize,
            "optimize.quantize",
            ("optimize.quantize", "optimize.measure"),
            args=("to", "measure"),
        ),
        Stage(
            "distill",
            run_distill,
            "optimize.distill",
            ("optimize.distill", "optimize.measure"),
            args=("measure",),
            estimate=_distill_job,
        ),
        Stage("prune", run_prune, "optimize.prune", ("optimize.prune", "optimize.measure"), args=("measure",)),
        Stage("evaluate", run_evaluate, "evaluate", ("evaluate",), default_parent=None),
    ]
}


def expand_composite(stage: str, spec, args: dict) -> list[tuple[str, str, dict]]:
    """A composite stage's sub-steps as (suffix, stage, args): align by ``align.method``, optimize by the
    ``methods`` argument (default: quantize, one step per ``optimize.quantize.to``). Others: themselves."""
    if stage == "align":
        method = spec.align.method
        if method == "ppo":
            return [("preferences", "preferences", {}), ("reward", "reward", {}), ("ppo", "ppo", dict(args))]
        if method == "kto" and spec.align.kto.data == "feedback":
            return [("kto", "kto", dict(args))]  # people's thumbs: no pairs to build
        if method in {"kto", "orpo", "simpo"}:
            return [("preferences", "preferences", {}), (method, method, dict(args))]
        return [("preferences", "preferences", {}), ("dpo", "dpo", dict(args))]
    if stage == "optimize":
        out = []
        for method in args.get("methods") or ["quantize"]:
            extra = {k: v for k, v in args.items() if k == "measure"}
            if method == "quantize":
                targets = args.get("to") or spec.optimize.quantize.to
                out += [
                    (f"quantize-{t.replace(':', '-')}", "quantize", {**extra, "to": t})
                    for t in ([targets] if isinstance(targets, str) else targets)
                ]
            else:
                out.append((method, method, extra))
        return out
    if stage == "quantize" and "to" not in args:
        return [("", "quantize", {**args, "to": spec.optimize.quantize.to[0]})]
    return [("", stage, dict(args))]


COMPOSITE_ARGS = {"align": ("evaluate",), "optimize": ("methods", "to", "measure")}
COMPOSITE_SECTIONS = {"align": "align", "optimize": "optimize"}
