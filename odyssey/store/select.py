"""Store helpers for the select stage: selections (the ranking `odyssey select` made) and benchmark scores.
Functions take a :class:`~odyssey.store.Store`; all SQL is parameterized."""

from __future__ import annotations

import json

from odyssey.store import Store, _row, now


def add_selection(
    store: Store, run_id: int, chosen: str | None, split: str, n_examples: int, ranking: list[dict]
) -> int:
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO selections (project_id, run_id, chosen, split, n_examples, ranking_json, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (store.project_id, run_id, chosen, split, n_examples, json.dumps(ranking, default=str), now()),
        )
    return cur.lastrowid


def latest_selection(store: Store) -> dict | None:
    row = store.db.execute(
        "SELECT * FROM selections WHERE project_id = ? ORDER BY id DESC LIMIT 1", (store.project_id,)
    ).fetchone()
    return _row(row) if row else None


def add_benchmark_scores(store: Store, run_id: int | None, model_ref: str, scores: list[dict]) -> int:
    stamp = now()
    rows = [
        (
            store.project_id,
            run_id,
            model_ref,
            s["task"],
            s["metric"],
            float(s["value"]),
            s.get("stderr"),
            s.get("n_samples"),
            stamp,
        )
        for s in scores
        if s.get("value") is not None
    ]
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO benchmark_scores (project_id, run_id, model_ref, task, metric, value, stderr, n_samples,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def benchmark_scores(store: Store, model_ref: str | None = None) -> list[dict]:
    sql = "SELECT * FROM benchmark_scores WHERE project_id IS ?"
    params: list = [store.project_id]
    if model_ref:
        sql += " AND model_ref = ?"
        params.append(model_ref)
    return [_row(r) for r in store.db.execute(sql + " ORDER BY id", params)]
