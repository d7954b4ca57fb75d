"""Experiment tracking: every run of the store copied, as it happens, to MLflow and TensorBoard.

``tracking: {mlflow: {uri: http://127.0.0.1:5000}}`` and/or ``tracking: {tensorboard: true}`` in
odyssey.yaml makes :attr:`odyssey.project.Project.store` install listeners on the store
(``Store.listeners``). The store tells each of them about every run's start (stage, config, spec),
metrics (per training step where the stage gives one), artifacts, summary and end, so every stage is
tracked without a line of stage code knowing about it. Metrics that belong to a candidate go to a
child run named after it (MLflow nested runs; a TensorBoard sub-folder), tagged with its lineage.

What happens when the tracking server cannot be reached: **fail fast**. The listener checks the
server when it is installed, that is when a command first opens the project's store, before any work,
and stops the command with an Unavailable error (exit 5) that names the URI. A training run whose
metrics silently never reached the tracker is what users of other tools complain about most; a
refused start costs seconds. ``ODYSSEY_TRACKING=off`` runs one command without tracking (to look
at the board while the server is down, say). Once a run has started, a tracking failure never stops
the work: it is one warning, the listener stops copying that run, and the store still has all of it,
so ``odyssey track export`` copies the run later (an incompletely copied run is replaced then).

``odyssey track export`` (:func:`odyssey.tracking.export.export_mlflow`) copies the runs already in
the store, with their lineage, plus the board as a run of its own; runs copied before are skipped.

MLflow and TensorBoard are optional: ``pip install 'llm-odyssey[tracking]'``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Protocol

OFF_ENV = "ODYSSEY_TRACKING"  # "off" (or 0/false/no): no listeners for this process


class RunListener(Protocol):
    """What the store calls (``Store.listeners``); ``run_id`` is the store's run id. A listener must not
    raise once a run has started: losing the tracking copy is a warning, never a failed stage."""

    def run_started(self, run_id: int, stage: str, spec: dict, config: dict) -> None: ...

    def metrics_logged(
        self, run_id: int, metrics: dict[str, float], *, candidate_id: int | None, split: str | None, step: int | None
    ) -> None: ...

    def artifact_added(self, run_id: int, artifact: dict) -> None: ...

    def summary_set(self, run_id: int, summary: dict) -> None: ...

    def run_finished(self, run_id: int, status: str, error: str | None) -> None: ...


def tracking_off() -> bool:
    return os.environ.get(OFF_ENV, "").strip().lower() in {"off", "0", "false", "no"}


def install_listeners(store, tracking, *, root, project: str) -> list:
    """The listeners ``tracking`` (the spec's TrackingSpec) asks for, added to ``store.listeners``.
    An unreachable MLflow server raises Unavailable here: at the start of the command."""
    if tracking_off():
        return []
    listeners: list = []
    if tracking.mlflow is not None:
        from odyssey.tracking.mlflow import MlflowListener, MlflowTarget

        target = MlflowTarget.connect(tracking.mlflow.uri, tracking.mlflow.experiment or project)
        listeners.append(MlflowListener(target, store, project=project, root=root))
    if tracking.tensorboard:
        from pathlib import Path

        from odyssey.tracking.tensorboard import TensorBoardListener

        board = tracking.tensorboard
        folder = Path(".odyssey/tensorboard" if isinstance(board, bool) else board.dir)
        listeners.append(TensorBoardListener(folder if folder.is_absolute() else Path(root) / folder, store))
    store.listeners.extend(listeners)
    return listeners


# ---- shared by the MLflow and TensorBoard writers ---------------------------------------------------

_UNSAFE = re.compile(r"[^\w./\- ]")


def safe_key(text: str) -> str:
    """A metric/param/folder name both trackers accept: letters, digits, _ - . / and space (MLflow refuses
    others, a colon included on Windows; ``tiny-llama:lora`` becomes ``tiny-llama_lora``)."""
    return _UNSAFE.sub("_", text).strip("/") or "_"


def metric_key(name: str, split: str | None) -> str:
    """``validation/rougeL``; a metric logged without a split keeps its name (``train/loss``)."""
    return safe_key(f"{split}/{name}" if split and not name.startswith(f"{split}/") else name)


def flatten(config: Any, prefix: str = "", limit: int = 500) -> dict[str, str]:
    """A run's config as flat ``a.b.c -> value`` params (lists as JSON), at most ``limit`` of them."""
    out: dict[str, str] = {}

    def walk(value, key):
        if len(out) >= limit:
            return
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            out[safe_key(key or "value")] = value if isinstance(value, str) else json.dumps(value, default=str)

    walk(config, prefix)
    return out


class StepCounter:
    """Steps for metrics logged without one: each key counts its own values (0, 1, 2 ...), so a metric
    logged once per evaluation still draws as a history."""

    def __init__(self):
        self._next: dict[tuple, int] = {}

    def step(self, scope: Any, key: str, given: int | None) -> int:
        if given is not None:
            self._next[(scope, key)] = int(given) + 1
            return int(given)
        value = self._next.get((scope, key), 0)
        self._next[(scope, key)] = value + 1
        return value


def candidate_lineage(store, candidate_id: int) -> dict[str, str]:
    """Tags naming a candidate, its stage, model and parent (the lineage MLflow shows beside the run)."""
    row = store.candidate(int(candidate_id))
    if row is None:
        return {}
    parent = store.candidate(row["parent_id"]) if row.get("parent_id") else None
    tags = {
        "odyssey.candidate": row["name"],
        "odyssey.candidate_stage": row["stage"],
        "odyssey.model_ref": str(row["model_ref"])[:5000],
    }
    if parent is not None:
        tags["odyssey.parent"] = parent["name"]
    for key in ("method", "base", "data_hash"):
        if row["config"].get(key) is not None:
            tags[f"odyssey.{key}"] = str(row["config"][key])[:5000]
    return tags


__all__ = [
    "RunListener",
    "install_listeners",
    "tracking_off",
    "safe_key",
    "metric_key",
    "flatten",
    "StepCounter",
    "candidate_lineage",
    "OFF_ENV",
]
