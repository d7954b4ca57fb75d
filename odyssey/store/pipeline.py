"""Store helpers for ``odyssey run``'s step records (``pipeline_steps``, migration 070).

A step record is one attempt at one pipeline step. The step is cached when its latest succeeded record
has the same input hash; it is resumed when its latest record with that hash was left running by a
process that died, or failed.
"""

from __future__ import annotations

import json
import os

from odyssey.store import Store, _row, now, pid_alive


def start_step(
    store: Store, *, step: str, stage: str, input_hash: str, inputs: dict, pipeline_run_id: int | None, resumed: bool
) -> int:
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO pipeline_steps (project_id, pipeline_run_id, step, stage, input_hash, inputs_json, status,"
            " resumed, pid, started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (
                store.project_id,
                pipeline_run_id,
                step,
                stage,
                input_hash,
                json.dumps(inputs, default=str),
                int(resumed),
                os.getpid(),
                now(),
            ),
        )
    return cur.lastrowid


def finish_step(
    store: Store,
    record_id: int,
    status: str,
    *,
    outcome: dict | None = None,
    wall_s: float | None = None,
    error: str | None = None,
) -> None:
    with store.transaction() as db:
        db.execute(
            "UPDATE pipeline_steps SET status = ?, outcome_json = ?, wall_s = ?, error = ?, finished_at = ?"
            " WHERE id = ?",
            (status, json.dumps(outcome or {}, default=str), wall_s, error, now(), record_id),
        )


def mark_interrupted(store: Store) -> int:
    """Records left 'running' by a process that no longer exists (kill -9, a crash): 'interrupted'."""
    rows = store.db.execute(
        "SELECT id, pid FROM pipeline_steps WHERE project_id = ? AND status = 'running'", (store.project_id,)
    ).fetchall()
    dead = [r["id"] for r in rows if r["pid"] != os.getpid() and not pid_alive(r["pid"])]
    for record_id in dead:
        finish_step(store, record_id, "interrupted", error="the process running this step exited before it finished")
    return len(dead)


def latest_step(store: Store, step: str, *, status: str | None = None, input_hash: str | None = None) -> dict | None:
    sql = "SELECT * FROM pipeline_steps WHERE project_id = ? AND step = ?"
    params: list = [store.project_id, step]
    if status:
        sql += " AND status = ?"
        params.append(status)
    if input_hash:
        sql += " AND input_hash = ?"
        params.append(input_hash)
    row = store.db.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
    return _row(row) if row else None


def step_records(store: Store, pipeline_run_id: int | None = None) -> list[dict]:
    """Every step record of the project (or of one `odyssey run`), oldest first."""
    sql = "SELECT * FROM pipeline_steps WHERE project_id = ?"
    params: list = [store.project_id]
    if pipeline_run_id is not None:
        sql += " AND pipeline_run_id = ?"
        params.append(pipeline_run_id)
    return [_row(r) for r in store.db.execute(sql + " ORDER BY id", params)]


def running_steps(store: Store) -> list[dict]:
    """Records now marked running (what a watcher, e.g. the kill -9 test, polls)."""
    rows = store.db.execute(
        "SELECT * FROM pipeline_steps WHERE project_id = ? AND status = 'running' ORDER BY id", (store.project_id,)
    )
    return [_row(r) for r in rows]
