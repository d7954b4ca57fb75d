"""The run store: one SQLite database (WAL) plus an artifacts folder per project.

Only this module writes run history. A stage opens a run with ``store.run(...)``; if the
stage raises, the run is marked failed with the error, and everything written before is kept.
A run left 'running' by a killed process is marked failed the next time the store opens.
All SQL is parameterized.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from odyssey.store import candidates, migrations
from odyssey.store.candidates import Candidate, UnknownCandidate

DB_FILE = "odyssey.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    id: int
    stage: str
    store: Store
    artifacts_dir: Path

    def log_metrics(
        self,
        metrics: dict[str, float],
        *,
        candidate_id: int | None = None,
        split: str | None = None,
        step: int | None = None,
    ):
        self.store.log_metrics(self.id, metrics, candidate_id=candidate_id, split=split, step=step)

    def add_artifact(self, path: Path, kind: str) -> dict:
        return self.store.add_artifact(self.id, path, kind)

    def set_summary(self, summary: dict):
        self.store.set_summary(self.id, summary)


class Store:
    def __init__(self, db: sqlite3.Connection, root: Path):
        self.db = db
        self.root = root
        self.project_id: int | None = None
        # Run listeners (odyssey.tracking.RunListener: MLflow, TensorBoard), installed by Project.store from
        # the spec's tracking: section. Each is told of every run's start, metrics, artifacts, summary and end,
        # so every stage is tracked without stage code knowing; a listener handles its own errors.
        self.listeners: list = []
        self.scope = None  # the project's Scope and default PromptConfig: see bind()
        self.default_prompt = None

    @classmethod
    def open(cls, root: Path) -> Store:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (see ``transaction``), never implicit.
        db = sqlite3.connect(root / DB_FILE, isolation_level=None, timeout=30, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        migrations.apply(db)
        store = cls(db, root)
        store._fail_orphaned_runs()
        return store

    def close(self):
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    @property
    def artifacts_root(self) -> Path:
        return self.root / "artifacts"

    # ---- projects ---------------------------------------------------------------------------
    def ensure_project(self, name: str, root: Path) -> int:
        row = self.db.execute("SELECT id FROM projects WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.transaction() as db:
                cur = db.execute(
                    "INSERT INTO projects (name, root, created_at) VALUES (?, ?, ?)", (name, str(root), now())
                )
            self.project_id = cur.lastrowid
        else:
            self.project_id = row["id"]
        return self.project_id

    # ---- runs -------------------------------------------------------------------------------
    def _fail_orphaned_runs(self):
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
        for row in rows:
            if row["pid"] != os.getpid() and not pid_alive(row["pid"]):
                self.finish_run(
                    row["id"], "failed", error="interrupted: the process running it exited before it finished"
                )

    def start_run(self, stage: str, spec: dict, config: dict | None = None) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (project_id, stage, status, spec_json, config_json, pid, started_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (self.project_id, stage, json.dumps(spec), json.dumps(config or {}, default=str), os.getpid(), now()),
            )
        self._tell("run_started", cur.lastrowid, stage, spec, config or {})
        return cur.lastrowid

    def _tell(self, event: str, run_id: int, *args, **kwargs) -> None:
        for listener in self.listeners:
            getattr(listener, event)(run_id, *args, **kwargs)

    def finish_run(self, run_id: int, status: str, error: str | None = None):
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?", (status, now(), error, run_id)
            )
        self._tell("run_finished", run_id, status, error)

    def set_summary(self, run_id: int, summary: dict):
        with self.transaction() as db:
            db.execute("UPDATE runs SET summary_json = ? WHERE id = ?", (json.dumps(summary, default=str), run_id))
        self._tell("summary_set", run_id, summary)

    @contextmanager
    def run(self, stage: str, spec: dict, config: dict | None = None) -> Iterator[Run]:
        """A run that is marked succeeded when the block ends, failed (with the error) if it raises."""
        run_id = self.start_run(stage, spec, config)
        artifacts = self.artifacts_root / f"run-{run_id}"
        try:
            yield Run(run_id, stage, self, artifacts)
        except BaseException as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.finish_run(run_id, "failed", error=detail or type(exc).__name__)
            raise
        else:
            self.finish_run(run_id, "succeeded")

    def get_run(self, run_id: int) -> dict:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row(row)

    def runs(self, stage: str | None = None, limit: int = 50) -> list[dict]:
        sql = "SELECT * FROM runs WHERE project_id = ?"
        params: list[Any] = [self.project_id]
        if stage:
            sql += " AND stage = ?"
            params.append(stage)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_row(r) for r in self.db.execute(sql, params)]

    # ---- candidates -------------------------------------------------------------------------
    def upsert_candidate(
        self,
        name: str,
        stage: str,
        model_ref: str,
        config: dict | None = None,
        parent_id: int | None = None,
        run_id: int | None = None,
    ) -> int:
        """Create the candidate, or update it in place when one of that name exists (its history stays)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM candidates WHERE project_id = ? AND name = ?", (self.project_id, name)
            ).fetchone()
            if row:
                db.execute(
                    "UPDATE candidates SET stage = ?, model_ref = ?, config_json = ?, parent_id = ?, run_id = ?"
                    " WHERE id = ?",
                    (stage, model_ref, json.dumps(config or {}, default=str), parent_id, run_id, row["id"]),
                )
                return row["id"]
            cur = db.execute(
                "INSERT INTO candidates (project_id, name, stage, model_ref, config_json, parent_id, run_id,"
                " created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.project_id,
                    name,
                    stage,
                    model_ref,
                    json.dumps(config or {}, default=str),
                    parent_id,
                    run_id,
                    now(),
                ),
            )
            return cur.lastrowid

    def candidate(self, name_or_id: str | int) -> dict | None:
        if isinstance(name_or_id, int):
            row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (name_or_id,)).fetchone()
        else:
            row = self.db.execute(
                "SELECT * FROM candidates WHERE project_id = ? AND name = ?", (self.project_id, name_or_id)
            ).fetchone()
        return _row(row) if row else None

    def candidates(self) -> list[dict]:
        rows = self.db.execute("SELECT * FROM candidates WHERE project_id = ? ORDER BY id", (self.project_id,))
        return [_row(r) for r in rows]

    # ---- candidates as the objects stages exchange (odyssey.store.candidates) ------------------
    def bind(self, scope, default_prompt) -> None:
        """What ranking and reading candidates need from the project: the scope (its primary metric
        and gates, for ``best``) and the default PromptConfig (for a candidate stored without a prompt).
        ``Project.store`` binds them."""
        self.scope, self.default_prompt = scope, default_prompt

    def candidate_obj(self, name_or_id: str | int) -> Candidate | None:
        """The stored candidate (by name or id) as a :class:`Candidate`, or None."""
        row = self.candidate(name_or_id)
        if row is None:
            return None
        parent = self.candidate(row["parent_id"]) if row.get("parent_id") else None
        return candidates.from_row(row, parent["name"] if parent else None, self.default_prompt)

    def lineage(self, name_or_id: str | int) -> list[str]:
        """The candidate's name, then its parent's, and so on back to the root (a cycle in the stored rows
        ends the walk rather than looping)."""
        names: list[str] = []
        row = self.candidate(name_or_id)
        while row is not None and row["name"] not in names:
            names.append(row["name"])
            row = self.candidate(row["parent_id"]) if row.get("parent_id") else None
        return names

    def resolve(self, name_or_best: str) -> Candidate:
        """A stored candidate by name, or ``best`` (:meth:`best`); UnknownCandidate when there is none."""
        found = self.best() if name_or_best == "best" else self.candidate_obj(name_or_best)
        if found is not None:
            return found
        known = ", ".join(c["name"] for c in self.candidates()) or "none yet"
        if name_or_best == "best":
            raise UnknownCandidate(
                "no candidate is scored on test yet, so none is 'best'",
                hint=f"candidates: {known}; run odyssey eval on one",
            )
        raise UnknownCandidate(f"no candidate named {name_or_best!r}", hint=f"candidates: {known}")

    def best(
        self,
        split: str = "test",
        metric: str | None = None,
        *,
        stage: str | None = None,
        exclude_stage: str | None = None,
    ) -> Candidate | None:
        """The best candidate: THE rule, which the board, ``best`` everywhere and align's start use.

        Among the candidates with a value of ``metric`` (default: the scope's primary metric) on
        ``split`` (their latest), those that pass every gate of the scope (a gate whose metric was not
        measured does not fail), else all of them: the highest value wins. A tie goes to the older
        candidate (a newer one must score higher to take its place; not the one with fewer parameters:
        a quantized model's counted parameters shrink while it is the same model). None when no
        candidate is scored. ``stage`` / ``exclude_stage`` narrow the pool.
        """
        scope = self.scope
        metric = metric or (scope.primary_metric if scope is not None else None)
        return candidates.best(
            self,
            split,
            metric,
            gates=scope.gate_list() if scope is not None else [],
            stage=stage,
            exclude_stage=exclude_stage,
        )

    def ensure(self, candidate: Candidate) -> Candidate:
        """The stored form of ``candidate``: a pseudo-candidate (a model zero-shot) gets its row (stage
        ``select``, its prompt) when missing, so what a stage makes from it has a parent on the board."""
        if candidate.stored:
            return candidate
        existing = self.candidate(candidate.name)
        cand_id = (
            existing["id"]
            if existing
            else self.upsert_candidate(
                candidate.name,
                candidate.stage,
                candidate.model_ref,
                {"prompt": candidate.prompt.as_dict()} if candidate.prompt is not None else {},
            )
        )
        return replace(candidate, id=cand_id, config=existing["config"] if existing else candidate.config)

    # ---- metrics, outputs, artifacts ---------------------------------------------------------
    def log_metrics(
        self,
        run_id: int,
        metrics: dict[str, float],
        *,
        candidate_id: int | None = None,
        split: str | None = None,
        step: int | None = None,
    ):
        """``step`` (a training step) goes to the run listeners only; the store keeps the order of values."""
        stamp = now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO metrics (run_id, candidate_id, split, name, value, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, candidate_id, split, k, float(v), stamp) for k, v in metrics.items() if v is not None],
            )
        self._tell(
            "metrics_logged",
            run_id,
            {k: float(v) for k, v in metrics.items() if v is not None},
            candidate_id=candidate_id,
            split=split,
            step=step,
        )

    def latest_metrics(self, candidate_id: int, split: str | None = None) -> dict[str, float]:
        """The most recent value of each metric for a candidate (on one split, or any)."""
        sql = (
            "SELECT name, value FROM metrics WHERE id IN (SELECT MAX(id) FROM metrics WHERE candidate_id = ?"
            + (" AND split = ?" if split else "")
            + " GROUP BY name, split) ORDER BY id"
        )
        params = (candidate_id, split) if split else (candidate_id,)
        return {r["name"]: r["value"] for r in self.db.execute(sql, params)}

    def metrics_for_run(self, run_id: int) -> list[dict]:
        return [_row(r) for r in self.db.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY id", (run_id,))]

    def add_outputs(
        self, run_id: int, rows: Iterable[dict], *, candidate_id: int | None = None, split: str | None = None
    ) -> int:
        stamp = now()
        values = [
            (
                run_id,
                candidate_id,
                split,
                r.get("example_id"),
                r["prompt"],
                r["prediction"],
                json.dumps(r.get("references", [])),
                json.dumps(r.get("scores", {})),
                r.get("latency_ms"),
                stamp,
            )
            for r in rows
        ]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO outputs (run_id, candidate_id, split, example_id, prompt, prediction, references_json,"
                " scores_json, latency_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def outputs(self, run_id: int) -> list[dict]:
        rows = self.db.execute("SELECT * FROM outputs WHERE run_id = ? ORDER BY id", (run_id,))
        return [_row(r) for r in rows]

    def add_artifact(self, run_id: int, path: Path, kind: str) -> dict:
        """Record a file written by a run; files outside the artifacts folder are copied into it."""
        path = Path(path)
        target_dir = self.artifacts_root / f"run-{run_id}"
        if not path.resolve().is_relative_to(target_dir.resolve()):
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / path.name
            shutil.copy2(path, target)
            path = target
        info = {"path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size, "kind": kind}
        with self.transaction() as db:
            db.execute(
                "INSERT INTO artifacts (run_id, kind, path, sha256, size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, kind, info["path"], info["sha256"], info["size"], now()),
            )
        self._tell("artifact_added", run_id, info)
        return info

    def artifacts(self, run_id: int) -> list[dict]:
        return [_row(r) for r in self.db.execute("SELECT * FROM artifacts WHERE run_id = ? ORDER BY id", (run_id,))]

    def project_artifacts(self, kind: str, limit: int | None = None) -> list[dict]:
        """This project's artifacts of one ``kind`` (e.g. ``report-plot``), newest first."""
        rows = self.db.execute(
            "SELECT a.* FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE r.project_id = ? AND a.kind = ?"
            " ORDER BY a.id DESC LIMIT ?",
            (self.project_id, kind, -1 if limit is None else limit),
        )
        return [_row(r) for r in rows]

    def project_artifact(self, artifact_id: int, kind: str) -> dict | None:
        """One artifact of this project by id, only if it is of ``kind`` (so a caller serves no other file)."""
        row = self.db.execute(
            "SELECT a.* FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE a.id = ? AND r.project_id = ?"
            " AND a.kind = ?",
            (artifact_id, self.project_id, kind),
        ).fetchone()
        return _row(row)


def _row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in list(out):
        if key.endswith("_json"):
            out[key[:-5]] = json.loads(out.pop(key))
    return out
