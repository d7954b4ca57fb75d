"""The plan of ``odyssey run``: the spec's ``pipeline:`` (or the default) as ordered, validated steps; the
profile and each step's overrides applied to the spec; the hash of each step's inputs.

Bad input is an error naming odyssey.yaml, the line and the field: an unknown stage (the spec loader
already says so), a parent that does not exist, a cycle of parents, a profile that does not exist, an
override the stage's section does not have.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, SpecError
from odyssey.pipeline.names import DEFAULT_PIPELINE, PROFILES, close_match
from odyssey.pipeline.stages import COMPOSITE_ARGS, COMPOSITE_SECTIONS, STAGES, expand_composite


@dataclass
class Step:
    id: str  # unique: the step's name, else its stage; a composite's sub-steps are "<id>.<sub-stage>"
    stage: str  # a stage of the table (never a composite)
    parent: str | None  # as written, or the stage's default; a step id, 'best', a candidate or a model
    parent_written: bool
    overrides: dict[str, Any] = field(default_factory=dict)  # `with:` keys that are spec fields
    args: dict[str, Any] = field(default_factory=dict)  # `with:` keys that are entry-function arguments
    section: str | None = None  # where ``overrides`` go
    index: int | None = None  # position in spec.pipeline (None: the default pipeline), for file:line
    spec: Any = None  # the Spec this step runs with (profile + overrides)

    @property
    def trains(self) -> bool:
        return STAGES[self.stage].estimate is not None


@dataclass
class Plan:
    steps: list[Step]
    profile: str | None
    spec: Any  # the spec with the profile applied


# ---- errors with file:line -------------------------------------------------------------------------


def _problem(project, loc: tuple, message: str, value: Any = None, hint: str | None = None) -> SpecError:
    from odyssey.project import Problem, _dotted, _key_lines, _line_of

    lines = _key_lines(project.spec_path) if project.spec_path.exists() else {}
    problem = Problem(project.spec_path.name, _line_of(lines, loc), _dotted(loc), message, value, hint)
    return SpecError(f"{project.spec_path} has 1 problem:", problems=[str(problem)])


# ---- profiles and overrides ------------------------------------------------------------------------


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profiles(spec) -> dict[str, dict]:
    return {**PROFILES, **spec.profiles}


def apply_profile(project, name: str | None):
    """The spec with profile ``name``'s overrides merged in (validated like odyssey.yaml itself)."""
    if not name:
        return project.spec
    known = profiles(project.spec)
    if name not in known:
        close = close_match(name, known)
        raise OdysseyError(
            f"--profile {name!r}: no such profile",
            hint=(f"did you mean {close!r}? " if close else "")
            + f"profiles: {', '.join(known)} (add your own under profiles: in {project.spec_path.name})",
        )
    return _validated(project, deep_merge(project.spec.as_dict(), known[name]), ("profiles", name), f"profile {name!r}")


def _validated(project, data: dict, loc: tuple, what: str):
    from pydantic import ValidationError

    from odyssey.spec import Spec

    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_path = ".".join(str(p) for p in first["loc"])
        raise _problem(
            project,
            loc,
            f"{what} makes {field_path} invalid: {first['msg']}",
            hint="check the override against the spec's field (`odyssey init` writes every setting)",
        ) from None


def _nested(dotted: str, value: dict) -> dict:
    out: dict = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def section_value(spec_dict: dict, dotted: str) -> Any:
    value: Any = spec_dict
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# ---- building the plan -----------------------------------------------------------------------------


def make_plan(project, profile: str | None = None) -> Plan:
    spec = apply_profile(project, profile)
    written = spec.pipeline if spec.pipeline is not None else None
    rows = (
        [(i, s.stage, s.name, s.parent, dict(s.with_)) for i, s in enumerate(written)]
        if written is not None
        else [(None, stage, None, None, {}) for stage in DEFAULT_PIPELINE]
    )
    ids = _step_ids(project, rows)
    ordered = _ordered(project, rows, ids)
    steps: list[Step] = []
    last_of: dict[str, str] = {}  # a composite's id -> the id of its last sub-step (what a child starts from)
    for i in ordered:
        index, stage, _, parent, with_ = rows[i]
        steps += _expand(project, spec, ids[i], index, stage, parent, with_, steps, last_of)
    return Plan(steps, profile, spec)


def _step_ids(project, rows) -> list[str]:
    ids, seen = [], {}
    for n, (index, stage, name, _, _) in enumerate(rows):
        step_id = name or stage
        if step_id in seen:
            raise _problem(
                project,
                ("pipeline", index),
                f"two steps are called {step_id!r}",
                hint="give one of them a name: (e.g. name: finetune-full)",
            )
        seen[step_id] = n
        ids.append(step_id)
    return ids


def _ordered(project, rows, ids: list[str]) -> list[int]:
    """Row order, except that a step comes after a step it names as parent; a cycle is an error."""
    position = {step_id: n for n, step_id in enumerate(ids)}
    done: list[int] = []
    state: dict[int, str] = {}

    def visit(n: int, trail: list[int]):
        if state.get(n) == "done":
            return
        if state.get(n) == "visiting":
            cycle = " -> ".join(ids[k] for k in trail[trail.index(n) :] + [n])
            raise _problem(
                project,
                ("pipeline", rows[n][0], "parent"),
                f"the steps' parents form a cycle: {cycle}",
                hint="a step's parent must be a step that can run before it",
            )
        state[n] = "visiting"
        parent = rows[n][3]
        if parent not in position and parent and parent.split(".")[0] in position:
            parent = parent.split(".")[0]  # a composite's sub-step ("align.dpo") runs with its row
        if parent in position and position[parent] != n:
            visit(position[parent], trail + [n])
        elif parent in position:
            raise _problem(project, ("pipeline", rows[n][0], "parent"), f"step {ids[n]!r} names itself as parent")
        state[n] = "done"
        done.append(n)

    for n in range(len(rows)):
        visit(n, [])
    return done


def _expand(project, spec, step_id, index, stage, parent, with_, earlier: list[Step], last_of) -> list[Step]:
    composite = stage in COMPOSITE_SECTIONS
    arg_keys = COMPOSITE_ARGS[stage] if composite else STAGES[stage].args
    args = {k: v for k, v in with_.items() if k in arg_keys}
    overrides = {k: v for k, v in with_.items() if k not in arg_keys}
    section = COMPOSITE_SECTIONS[stage] if composite else STAGES[stage].section
    if overrides and section is None:
        raise _problem(
            project,
            ("pipeline", index, "with"),
            f"the {stage} step takes no overrides",
            hint=f"remove with: {sorted(overrides)}",
        )
    step_spec = spec
    if overrides:
        step_spec = _validated(
            project,
            deep_merge(spec.as_dict(), _nested(section, overrides)),
            ("pipeline", index, "with"),
            f"step {step_id!r}'s with:",
        )
    _check_methods(project, index, args)
    parent = last_of.get(parent, parent)
    subs = expand_composite(stage, step_spec, args)
    out = []
    for suffix, sub_stage, sub_args in subs:
        sub_id = f"{step_id}.{suffix}" if composite else step_id
        written = parent is not None
        sub_parent = parent if written else _default_parent(sub_stage, earlier + out)
        out.append(Step(sub_id, sub_stage, sub_parent, written, overrides, sub_args, section, index, step_spec))
    if composite:
        last_of[step_id] = out[-1].id
    return out


def _check_methods(project, index, args: dict) -> None:
    for method in args.get("methods") or []:
        if method not in {"quantize", "distill", "prune"}:
            close = close_match(method, ["quantize", "distill", "prune"])
            raise _problem(
                project,
                ("pipeline", index, "with"),
                f"unknown optimize method {method!r}",
                method,
                (f"did you mean {close!r}? " if close else "") + "methods: quantize, distill, prune",
            )


def _default_parent(stage: str, earlier: list[Step]) -> str | None:
    """The latest earlier step of a stage this one follows, else the stage's default ('model', 'best', none)."""
    follows = STAGES[stage].follows
    for step in reversed(earlier):
        if step.stage in follows:
            return step.id
    return STAGES[stage].default_parent


def check_parents(project, plan: Plan) -> None:
    """Every parent names a step, 'best', 'model', a stored candidate or a model under models:."""
    step_ids = {s.id for s in plan.steps}
    candidates = {c["name"] for c in project.store.candidates()}
    models = {e.ref for e in plan.spec.model_entries()} | {e.name for e in plan.spec.model_entries() if e.name}
    earlier_stages: set[str] = set()
    for step in plan.steps:
        p = step.parent
        if p is not None and p.startswith("best:"):
            _check_best_of_stage(project, step, p.removeprefix("best:"), earlier_stages)
            p = None
        earlier_stages.add(step.stage)
        if p is None or p in step_ids or p in {"best", "model"} or p in candidates or p in models:
            continue
        known = sorted(step_ids | candidates | models | {"best"})
        close = close_match(p, known)
        loc = ("pipeline", step.index, "parent") if step.index is not None else ("pipeline",)
        raise _problem(
            project,
            loc,
            f"parent {p!r} of step {step.id!r} does not exist",
            p,
            (f"did you mean {close!r}? " if close else "")
            + f"a parent is 'best', 'best:STAGE', an earlier step ({', '.join(sorted(step_ids))}), a candidate "
            "(`odyssey status`) or a model under models:",
        )


def _check_best_of_stage(project, step: Step, stage: str, earlier_stages: set[str]) -> None:
    """``best:STAGE`` needs a step of that stage before this one."""
    if stage in earlier_stages:
        return
    loc = ("pipeline", step.index, "parent") if step.index is not None else ("pipeline",)
    close = close_match(stage, sorted(earlier_stages))
    raise _problem(
        project,
        loc,
        f"parent 'best:{stage}' of step {step.id!r}: no {stage} step runs before it",
        f"best:{stage}",
        (f"did you mean 'best:{close}'? " if close else "")
        + f"the stages of the steps before it: {', '.join(sorted(earlier_stages)) or 'none'}",
    )


def select_steps(project, plan: Plan, from_step: str | None, only: str | None) -> set[str]:
    """The step ids to run: all; or --from STEP and every step after it; or --only STEP (a step id or a
    stage name: its first step; a composite's id selects all its sub-steps)."""
    ids = [s.id for s in plan.steps]
    if not from_step and not only:
        return set(ids)
    wanted = only or from_step
    matches = [i for i, s in enumerate(plan.steps) if s.id == wanted or s.id.startswith(f"{wanted}.")]
    if not matches:
        matches = [i for i, s in enumerate(plan.steps) if s.stage == wanted][:1]
    if not matches:
        close = close_match(wanted, ids + [s.stage for s in plan.steps])
        flag = "--only" if only else "--from"
        raise OdysseyError(
            f"{flag} {wanted!r}: no such step in the pipeline",
            hint=(f"did you mean {close!r}? " if close else "") + f"steps: {', '.join(ids)}",
        )
    if only:
        return {ids[i] for i in matches}
    return set(ids[matches[0] :])


# ---- inputs and their hash -------------------------------------------------------------------------


def step_inputs(step: Step, *, data_fingerprint: str, parent: dict | None, needs: dict[str, dict]) -> dict:
    """What the step's result depends on: its spec sections and overrides, the data, the parent
    candidate (name, model_ref, the run that made it), what it consumes, and the code version."""
    spec_dict = step.spec.as_dict()
    sections = {name: section_value(spec_dict, name) for name in (*_common(), *STAGES[step.stage].hashed)}
    return {
        "stage": step.stage,
        "sections": sections,
        "args": step.args,
        "data": data_fingerprint,
        "parent": parent,
        "needs": needs,
        "code": code_version(),
    }


def _common():
    from odyssey.pipeline.stages import COMMON_SECTIONS

    return COMMON_SECTIONS


def input_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The odyssey version + the git commit; + a hash of the package's sources when there is no git or the
    package has uncommitted changes (a commit alone would hide an edit). ``ODYSSEY_CODE_VERSION`` pins it
    (a CI cache, a test that must not see other people's commits)."""
    import odyssey

    pinned = os.environ.get("ODYSSEY_CODE_VERSION")
    if pinned:
        return pinned
    package = Path(odyssey.__file__).resolve().parent
    commit, dirty = _git_state(package)
    version = f"{odyssey.__version__}+{commit[:12]}" if commit else odyssey.__version__
    return f"{version}+src.{source_hash(package)[:12]}" if dirty or not commit else version


def _git_state(package: Path) -> tuple[str | None, bool]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not commit:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False


def source_hash(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
