"""The search: an Optuna study over ``tune.space``, one fine-tune per trial.

- The study lives in the project: Optuna's SQLite storage ``.odyssey/tune/optuna.db``, one study per
  ``tune.study`` (default ``<model>-<method>``). ``tune.trials`` (``--trials``) is the study's size: a
  rerun counts the trials already finished (complete or pruned) and runs only the rest, so a search
  killed half way resumes where it stopped and never repeats a finished trial. A trial whose process
  died (its pid is gone) is marked failed and its settings are tried again in a new trial.
- Each trial is ``odyssey.adapt.finetune`` on a copy of the spec whose ``adapt:`` has the trial's
  settings, recorded as candidate ``<model>:<method>-tune-<trial>`` (its own run, working folder and
  checkpoints), evaluated on validation and test like any fine-tune. The objective is the scope's
  primary metric on validation; the board ranks every trial's candidate by its one rule (on test).
- Pruning: each validation-loss evaluation of the loop (``tune.eval_every`` steps) is reported to
  Optuna's median pruner; a trial worse than the median of earlier trials at that step stops there
  (``TrialPruned``: its run is marked failed with that reason, it makes no candidate).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from odyssey.errors import OdysseyError, require
from odyssey.spec import TUNE_PARAMS, AdaptSpec, tune_dimension
from odyssey.store import pid_alive

STUDY_DIR = "tune"
STORAGE_FILE = "optuna.db"
# Settings that only mean something for one method: searching them for another is a mistake.
METHOD_ONLY = {
    "lora_r": "lora",
    "lora_alpha": "lora",
    "lora_dropout": "lora",
    "lora_targets": "lora",
    "num_virtual_tokens": "prompt_tuning",
}
LIST_SEPARATOR = ","  # Optuna's choices are scalars: a list of LoRA targets is one string while it searches


class TrialPruned(OdysseyError):
    """Raised from the fine-tune's evaluation hook; the run records this message as why it stopped."""


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING
    params: dict
    value: float | None  # the primary metric on validation
    candidate: str | None
    test_value: float | None = None  # the same metric on test (what the board ranks by)


@dataclass
class TuneResult:
    study: str
    storage: str
    metric: str
    method: str
    trials: list[TrialRecord] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)  # trial numbers run by this call
    best_trial: int | None = None  # by the objective (validation)
    best_candidate: str | None = None
    board_best: str | None = None  # the board's best (test, gates): may be another stage's candidate
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


# ---- the search space ------------------------------------------------------------------------------


def search_space(space: dict[str, list], method: str, adapt: AdaptSpec) -> dict[str, tuple]:
    """``tune.space`` checked against the method and the adapt settings, before any work."""
    if not space:
        raise OdysseyError(
            "tune.space: the search space is empty: nothing to tune",
            hint="add settings, e.g. tune: {space: {learning_rate: [1e-5, 1e-3, log], lora_r: [4, 8]}}",
        )
    wrong = [name for name in space if METHOD_ONLY.get(name, method) != method]
    if wrong:
        raise OdysseyError(
            f"tune.space: {', '.join(wrong)} only apply to {METHOD_ONLY[wrong[0]]} fine-tuning, and "
            f"this search fine-tunes with {method}",
            hint=f"drop them from tune.space, or set tune.method: {METHOD_ONLY[wrong[0]]}",
        )
    dims = {}
    for name, values in space.items():
        try:
            dims[name] = tune_dimension(name, values)
        except ValueError as exc:
            raise OdysseyError(str(exc), hint="choices [4, 8, 16], or a range [low, high, log|linear|int]") from None
        kind, *rest = dims[name]
        for value in rest[:2] if kind == "range" else rest[0]:
            adapt_for(adapt, {name: int(value) if kind == "range" and rest[2] == "int" else value})
    return dims


def adapt_for(adapt: AdaptSpec, params: dict[str, Any]) -> AdaptSpec:
    """``adapt:`` with a trial's settings, validated as odyssey.yaml would be (a bad value is an error
    naming the tune.space entry)."""
    from pydantic import ValidationError

    data = adapt.model_dump(mode="json")
    for name, value in params.items():
        *parents, leaf = TUNE_PARAMS[name]
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return AdaptSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise OdysseyError(
            f"tune.space.{next(iter(params))}: {params} is not a valid adapt setting: {first['msg']}",
            hint="fix the choices or range in tune.space",
        ) from None


def suggest(trial, dims: dict[str, tuple]) -> dict[str, Any]:
    """The trial's settings, asked of Optuna (lists of LoRA targets travel as one comma-joined string)."""
    params = {}
    for name, (kind, *rest) in dims.items():
        if kind == "range":
            low, high, scale = rest
            params[name] = (
                trial.suggest_int(name, int(low), int(high))
                if scale == "int"
                else trial.suggest_float(name, float(low), float(high), log=scale == "log")
            )
            continue
        choices = [LIST_SEPARATOR.join(c) if isinstance(c, list) else c for c in rest[0]]
        picked = trial.suggest_categorical(name, choices)
        params[name] = picked.split(LIST_SEPARATOR) if name == "lora_targets" and picked != "all-linear" else picked
    return params


# ---- the study -------------------------------------------------------------------------------------


def _slug(project, model: str | None) -> str:
    from odyssey.models import parse_ref

    ref = model or project.spec.adapt.model or project.spec.prompt.model or project.default_model()
    try:
        return parse_ref(ref, project.root).slug
    except OdysseyError:
        return re.sub(r"[^\w.-]", "-", ref)  # a candidate name: the base is resolved by the fine-tune


def open_study(project, name: str, tspec, dims: dict[str, tuple]):
    optuna = require("optuna", "tune", "odyssey tune")
    folder = project.state_dir / STUDY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    storage = _storage(optuna, folder / STORAGE_FILE)
    if tspec.sampler == "grid":
        ranges = [n for n, d in dims.items() if d[0] == "range"]
        if ranges:
            raise OdysseyError(
                f"tune.sampler: grid needs choices, and {', '.join(ranges)} is a range",
                hint="give choices, e.g. learning_rate: [1e-4, 3e-4, 1e-3], or sampler: tpe",
            )
        grid = {n: [LIST_SEPARATOR.join(c) if isinstance(c, list) else c for c in d[1]] for n, d in dims.items()}
        sampler = optuna.samplers.GridSampler(grid, seed=tspec.seed)
    elif tspec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=tspec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=tspec.seed)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=tspec.prune_startup_trials, n_warmup_steps=0)
        if tspec.prune
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is ours to print
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )
    return study, storage


def _storage(optuna, path: Path) -> str:
    """The study's SQLite URL, its schema created whole: Optuna writes tables and the alembic version in
    several steps, and a kill -9 between them leaves a file the next run cannot open (UNIQUE constraint
    failed: alembic_version). So a new storage is built in a temp file and hard-linked into place."""
    _sweep_dead_temp_files(path)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        optuna.storages.RDBStorage(f"sqlite:///{tmp}").engine.dispose()
        try:
            os.link(tmp, path)  # not os.replace: a second odyssey tune may have made it (and used it) meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return f"sqlite:///{path}"


def _sweep_dead_temp_files(path: Path) -> None:
    """Temp storages left by a process killed while it built one (``.optuna.db.<pid>.tmp``): removed once
    that pid is gone; a live one is another ``odyssey tune`` still building its own."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name.removeprefix(f".{path.name}.").removesuffix(".tmp")
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def retire_dead_trials(study) -> list[int]:
    """Trials left RUNNING by a process that died (kill -9, a crash): marked failed, their settings queued
    again so the search still tries them. A live pid is another ``odyssey tune`` at work: left alone."""
    from optuna.trial import TrialState

    retired = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if pid_alive(trial.user_attrs.get("pid")):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        retired.append(trial.number)
    return retired


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


# ---- the entry point ---------------------------------------------------------------------------------


def tune(
    project,
    *,
    trials: int | None = None,
    method: str | None = None,
    model: str | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    engine: str | None = None,
) -> TuneResult:
    """Run (or resume) the study until it has ``trials`` finished trials (default ``tune.trials``)."""
    spec, tspec = project.spec, project.spec.tune
    method = method or tspec.method or spec.adapt.method
    dims = search_space(tspec.space, method, spec.adapt)
    if not project.dataset().splits.get("validation"):
        raise OdysseyError(
            "odyssey tune scores each trial on validation, and the validation split is empty",
            hint="set scope.data.splits.validation above 0, or give a validation file",
        )
    slug = _slug(project, model)
    name = tspec.study or f"{slug}-{method}"
    study, storage = open_study(project, name, tspec, dims)
    result = TuneResult(name, storage, spec.scope.primary_metric, method)
    retired = retire_dead_trials(study)
    if retired:
        result.notes.append(
            f"trial(s) {', '.join(map(str, retired))} were cut off by an interrupted search: marked "
            "failed, their settings tried again"
        )
    target = trials or tspec.trials
    if tspec.sampler == "grid":
        size = 1
        for _, choices in dims.values():
            size *= len(choices)
        if target > size:
            result.notes.append(f"the grid has {size} combinations: {size} trials, not {target}")
            target = size
    from odyssey import ui

    while finished(study) < target:
        number = run_trial(
            project, study, dims, slug=slug, method=method, model=model, max_steps=max_steps, limit=limit, engine=engine
        )
        result.ran.append(number)
        done = study.trials[number]
        ui.say(
            f"trial {number}: {done.state.name.lower()}"
            + (f", {result.metric} on validation {done.value:.4f}" if done.value is not None else "")
            + f" ({finished(study)} of {target})"
        )
    return _summary(project, study, result)


def run_trial(project, study, dims, *, slug, method, model, max_steps, limit, engine) -> int:
    """One trial: settings from Optuna, a fine-tune with them (pruned from its validation loss), told back."""
    from optuna.trial import TrialState

    from odyssey.adapt import finetune
    from odyssey.project import Project

    spec, tspec = project.spec, project.spec.tune
    trial = study.ask()
    trial.set_user_attr("pid", os.getpid())
    params = suggest(trial, dims)
    candidate = f"{slug}:{method}-tune-{trial.number}"
    trial.set_user_attr("candidate", candidate)
    adapt = adapt_for(spec.adapt, params)
    updates = {"method": method, "eval_splits": ["validation", *[s for s in adapt.eval_splits if s != "validation"]]}
    if tspec.eval_every:
        updates["eval_every"] = tspec.eval_every
    trial_project = Project(project.root, spec.model_copy(update={"adapt": adapt.model_copy(update=updates)}))

    def on_eval(step: int, entry: dict) -> None:
        # Optuna compares intermediate values in the study's direction (maximize), so the loss goes in negated.
        trial.report(-float(entry["val_loss"]), step)
        if trial.should_prune():
            raise TrialPruned(
                f"odyssey tune pruned trial {trial.number} at step {step}: validation loss "
                f"{entry['val_loss']:.4f} is worse than the median of earlier trials there"
            )

    try:
        outcome = finetune(
            trial_project,
            method=method,
            model=model,
            max_steps=max_steps,
            limit=limit,
            engine=engine,
            name=candidate,
            on_eval=on_eval,
        )
    except TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return trial.number
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)  # Ctrl-C or an error: the trial is over, the study stays
        raise
    finally:
        opened = trial_project.__dict__.get("store")  # Project.store is a cached property
        if opened is not None:
            opened.close()
    value = outcome.metrics.get("validation", {}).get(spec.scope.primary_metric)
    trial.set_user_attr("run_id", outcome.run_id)
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
        raise OdysseyError(
            f"trial {trial.number}: {candidate} has no {spec.scope.primary_metric} on validation",
            hint="check scope.metrics and that the validation split has rows",
        )
    study.tell(trial, float(value))
    return trial.number


def _summary(project, study, result: TuneResult) -> TuneResult:
    from optuna.trial import TrialState

    store = project.store
    metric = result.metric
    for t in study.get_trials(deepcopy=False):
        name = t.user_attrs.get("candidate")
        row = store.candidate(name) if name and t.state == TrialState.COMPLETE else None
        test = store.latest_metrics(row["id"], "test").get(metric) if row else None
        result.trials.append(TrialRecord(t.number, t.state.name, dict(t.params), t.value, name if row else None, test))
    complete = [t for t in result.trials if t.state == "COMPLETE" and t.value is not None]
    if complete:
        best = max(complete, key=lambda t: t.value)
        result.best_trial, result.best_candidate = best.number, best.candidate
    result.board_best = project.status().best
    return result
