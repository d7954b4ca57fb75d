"""The board (``odyssey status``): each lifecycle stage with its last run, and each candidate
with its metrics against the scope's gates. Read from the store only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from odyssey.evaluate import check_gates, gates_pass

STAGES = ["scope", "select", "prompt", "adapt", "align", "evaluate", "optimize", "deploy", "augment"]


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
            "project": self.project, "task": self.task, "stages": self.stages, "primary_metric": self.primary_metric,
            "best": self.best,
            "candidates": [{**asdict(c), "passed": c.passed} for c in self.candidates],
        }


def build_board(project) -> Board:
    store = project.store
    scope = project.spec.scope
    stages = []
    for stage in STAGES:
        if stage == "scope":
            stages.append({"stage": "scope", "status": "succeeded", "detail": f"{scope.task}, {len(scope.gate_list())} gates"})
            continue
        runs = store.runs(stage, limit=1)
        if runs:
            run = runs[0]
            stages.append({"stage": stage, "status": run["status"], "run_id": run["id"],
                           "finished_at": run["finished_at"], "detail": run.get("error") or ""})
        else:
            stages.append({"stage": stage, "status": "not run", "detail": ""})
    names = {c["id"]: c["name"] for c in store.candidates()}
    rows = []
    for cand in store.candidates():
        split, metrics = None, {}
        for s in ("test", "validation"):
            metrics = store.latest_metrics(cand["id"], s)
            if metrics:
                split = s
                break
        rows.append(CandidateRow(cand["name"], cand["stage"], cand["model_ref"], split, metrics,
                                 check_gates(scope, metrics) if metrics else [], names.get(cand["parent_id"])))
    primary = scope.primary_metric
    scored = [r for r in rows if r.split == "test" and primary in r.metrics]
    passing = [r for r in scored if r.passed]
    best = max(passing or scored, key=lambda r: r.metrics[primary]).name if scored else None
    return Board(project.spec.name, scope.task, stages, rows, primary, best)
