"""The board (``odyssey status``): each lifecycle stage with its last run, and each candidate
with its metrics against the scope's gates. Read from the store only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from odyssey.evaluate import check_gates, gates_pass

STAGES = ["scope", "select", "prompt", "adapt", "align", "evaluate", "optimize", "deploy", "augment"]
RUNS_LOOKED_AT = 200  # per stage, newest first: far more than any project's failed attempts in a row


def stage_row(stage: str, runs: list[dict]) -> dict:
    """A stage's status is its latest successful run: one mistyped command does not undo three good
    evaluations. A later failed (or running) attempt is a note beside it, in words."""
    if not runs:
        return {"stage": stage, "status": "not run", "detail": ""}
    good = next((r for r in runs if r["status"] == "succeeded"), None)
    latest = runs[0]
    row = good or latest
    out = {
        "stage": stage,
        "status": row["status"],
        "run_id": row["id"],
        "finished_at": row["finished_at"],
        "detail": "",
        "last_attempt": None,
    }
    if latest is not row or row["status"] != "succeeded":
        note = attempt_note(latest)
        out["last_attempt"] = {"run_id": latest["id"], "status": latest["status"], "note": note}
        out["detail"] = note
    return out


def attempt_note(run: dict) -> str:
    """``odyssey.errors.Unavailable: could not ...`` -> ``last attempt (run 7) failed: could not ...``."""
    if run["status"] == "running":
        return f"run {run['id']} is running"
    return f"last attempt (run {run['id']}) {run['status']}: {readable_error(run.get('error'))}"


def readable_error(error: str | None) -> str:
    """The first line of a stored error, without the Python class path a person does not need.
    An OdysseyError's message stands alone; a bug keeps its bare class name (``KeyError: 'x'``)."""
    if not error:
        return "no error was recorded"
    first = error.strip().splitlines()[0]
    if first.startswith("KeyboardInterrupt"):
        return "interrupted (Ctrl-C)"
    kind, sep, message = first.partition(": ")
    if not sep or " " in kind:
        return first
    name = kind.rsplit(".", 1)[-1]
    if kind.startswith("odyssey.") or name in {"OdysseyError", "SpecError", "Unavailable", "MissingDependency"}:
        return message
    return f"{name}: {message}"


@dataclass
class CandidateRow:
    name: str
    stage: str
    model_ref: str
    split: str | None
    metrics: dict[str, float]
    gates: list[dict]
    parent: str | None

    @property
    def passed(self) -> bool | None:
        return gates_pass(self.gates) if self.metrics else None


@dataclass
class Board:
    project: str
    task: str
    stages: list[dict]
    candidates: list[CandidateRow]
    primary_metric: str
    best: str | None

    def as_dict(self) -> dict:
        return {
            "project": self.project,
            "task": self.task,
            "stages": self.stages,
            "primary_metric": self.primary_metric,
            "best": self.best,
            "candidates": [{**asdict(c), "passed": c.passed} for c in self.candidates],
        }


def build_board(project) -> Board:
    store = project.store
    scope = project.spec.scope
    stages = []
    for stage in STAGES:
        if stage == "scope":
            stages.append(
                {"stage": "scope", "status": "succeeded", "detail": f"{scope.task}, {len(scope.gate_list())} gates"}
            )
            continue
        stages.append(stage_row(stage, store.runs(stage, limit=RUNS_LOOKED_AT)))
    names = {c["id"]: c["name"] for c in store.candidates()}
    rows = []
    for cand in store.candidates():
        split, metrics = None, {}
        for s in ("test", "validation"):
            metrics = store.latest_metrics(cand["id"], s)
            if metrics:
                split = s
                break
        rows.append(
            CandidateRow(
                cand["name"],
                cand["stage"],
                cand["model_ref"],
                split,
                metrics,
                check_gates(scope, metrics) if metrics else [],
                names.get(cand["parent_id"]),
            )
        )
    primary = scope.primary_metric
    best = store.best("test", primary)  # the one rule for "best" (its docstring says it)
    return Board(project.spec.name, scope.task, stages, rows, primary, best.name if best else None)
