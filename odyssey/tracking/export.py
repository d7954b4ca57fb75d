"""``odyssey track export``: every run already in the store copied to MLflow, and the board beside them.

Idempotent: each copy carries ``odyssey.run_id`` and, once written whole, ``odyssey.complete=true``;
a run copied whole before (by export or live tracking) is skipped, a partial copy (a crash, a server
that went away mid-run) is deleted and written again. Runs still running are left for later. The board
is one run (``odyssey.kind=board``: ``board.json`` and ``board.md``, each candidate's board metrics,
``odyssey.best``), replaced only when the board changed.

The store keeps no training step with its metrics, so a copied metric's steps are its values' order
(0, 1, 2 ...); live tracking (``tracking: mlflow:``) records the real training steps.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from odyssey.tracking import safe_key
from odyssey.tracking.mlflow import COMPLETE_TAG, MlflowTarget, RunCopy


@dataclass
class ExportResult:
    uri: str
    experiment: str
    exported: list[int] = field(default_factory=list)  # store run ids copied now
    skipped: list[int] = field(default_factory=list)  # copied whole before
    replaced: list[int] = field(default_factory=list)  # partial copies deleted and written again
    running: list[int] = field(default_factory=list)  # still running: not copied yet
    board: str = "unchanged"  # written | unchanged | none
    board_run: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(stamp: str | None) -> int | None:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None


def export_mlflow(project, uri: str | None = None, experiment: str | None = None) -> ExportResult:
    """Copy the project's runs and board to MLflow at ``uri`` (default ``tracking.mlflow.uri``)."""
    from odyssey.errors import OdysseyError

    configured = project.spec.tracking.mlflow
    uri = uri or (configured.uri if configured else None)
    if not uri:
        raise OdysseyError(
            "odyssey track export needs an MLflow tracking URI",
            hint="pass --uri http://127.0.0.1:5000, or set tracking: {mlflow: {uri: ...}} in odyssey.yaml",
        )
    experiment = experiment or (configured.experiment if configured else None) or project.spec.name
    target = MlflowTarget.connect(uri, experiment)
    store = project.store
    result = ExportResult(uri, experiment)
    copies: dict[str, list] = {}
    for found in target.runs_tagged("run"):
        if found.data.tags.get("odyssey.project") == project.spec.name:
            copies.setdefault(found.data.tags.get("odyssey.run_id"), []).append(found)
    for run in reversed(store.runs(limit=-1)):
        if run["status"] == "running":
            result.running.append(run["id"])
            continue
        earlier = copies.get(str(run["id"]), [])
        if any(c.data.tags.get(COMPLETE_TAG) == "true" for c in earlier):
            result.skipped.append(run["id"])
            continue
        for partial in earlier:
            target.delete_with_children(partial)
        (result.replaced if earlier else result.exported).append(run["id"])
        copy_run(target, project, run)
    result.board, result.board_run = export_board(target, project)
    return result


def copy_run(target: MlflowTarget, project, run: dict) -> str:
    """One finished store run as an MLflow run: params, spec, metrics (per candidate), artifacts, summary."""
    store = project.store
    copy = RunCopy(target, store, run, project=project.spec.name, root=project.root, start_ms=_ms(run["started_at"]))
    copy.params(run.get("config") or {}, run.get("spec"))
    batches: dict[tuple, dict] = {}  # one log call per (candidate, split, time): the order is kept per key
    for row in store.metrics_for_run(run["id"]):
        batches.setdefault((row["candidate_id"], row["split"], row["created_at"]), {})[row["name"]] = row["value"]
    for (candidate_id, split, stamp), metrics in batches.items():
        copy.metrics(metrics, candidate_id=candidate_id, split=split, at_ms=_ms(stamp))
    for artifact in store.artifacts(run["id"]):
        copy.artifact(artifact)
    if run.get("summary"):
        copy.summary(run["summary"])
    copy.finish(run["status"], run.get("error"), end_ms=_ms(run.get("finished_at")))
    return copy.mlflow_id


def export_board(target: MlflowTarget, project) -> tuple[str, str | None]:
    """The board as one run, written again only when it changed (its sha256 is a tag)."""
    from odyssey.evaluate.board import build_board

    board = build_board(project).as_dict()
    if not board["candidates"]:
        return "none", None
    digest = hashlib.sha256(json.dumps(board, sort_keys=True, default=str).encode()).hexdigest()[:16]
    earlier = [r for r in target.runs_tagged("board") if r.data.tags.get("odyssey.project") == project.spec.name]
    same = next(
        (
            r
            for r in earlier
            if r.data.tags.get("odyssey.board_sha") == digest and r.data.tags.get(COMPLETE_TAG) == "true"
        ),
        None,
    )
    if same is not None:
        return "unchanged", same.info.run_id
    for old in earlier:
        target.delete_with_children(old)
    tags = {
        "odyssey.kind": "board",
        "odyssey.project": project.spec.name,
        "odyssey.board_sha": digest,
        "odyssey.best": board["best"] or "",
        "odyssey.primary_metric": board["primary_metric"],
    }
    run = target.create_run("board", tags)
    stamp = int(time.time() * 1000)
    target.log_metrics(
        run,
        [
            (safe_key(f"{c['name']}/{name}"), float(value), 0, stamp)
            for c in board["candidates"]
            for name, value in c["metrics"].items()
        ],
    )
    target.log_dict(run, board, "board.json")
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "board.md"
        md.write_text(board_markdown(board), encoding="utf-8")
        target.log_file(run, md, "")
    target.set_tags(run, {COMPLETE_TAG: "true"})
    target.finish(run, "succeeded")
    return "written", run


def board_markdown(board: dict) -> str:
    """The board as a Markdown table: candidate, stage, parent, split, primary metric, gates."""
    primary = board["primary_metric"]
    lines = [
        f"# {board['project']}: {board['task']}",
        "",
        f"best: **{board['best'] or 'none yet'}** (by {primary} on test)",
        "",
        f"| candidate | stage | parent | split | {primary} | gates |",
        "|---|---|---|---|---|---|",
    ]
    for c in board["candidates"]:
        value = c["metrics"].get(primary)
        gates = {True: "pass", False: "fail", None: ""}[c["passed"]]
        lines.append(
            f"| {c['name']} | {c['stage']} | {c['parent'] or ''} | {c['split'] or ''} | "
            f"{'' if value is None else f'{value:.4f}'} | {gates} |"
        )
    return "\n".join(lines) + "\n"
