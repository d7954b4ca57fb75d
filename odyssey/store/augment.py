"""Store helpers for the augment stage: traces of RAG / CoT / PAL / ReAct answers (table
``augment_traces``, migration m060). Functions take a :class:`~odyssey.store.Store`."""

from __future__ import annotations

import json
from collections.abc import Iterable

from odyssey.store import Store, _row, now


def add_traces(store: Store, run_id: int, rows: Iterable[dict], *, candidate_id: int | None = None) -> int:
    """rows: dicts with technique, question, and optionally example_id, answer, correct, error, trace."""
    stamp = now()
    values = [
        (
            run_id,
            candidate_id,
            r.get("example_id"),
            r["technique"],
            r["question"],
            r.get("answer"),
            None if r.get("correct") is None else int(bool(r["correct"])),
            r.get("error"),
            json.dumps(r.get("trace", []), default=str),
            stamp,
        )
        for r in rows
    ]
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO augment_traces (run_id, candidate_id, example_id, technique, question, answer, correct, error,"
            " trace_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    return len(values)


def traces(store: Store, run_id: int) -> list[dict]:
    rows = store.db.execute("SELECT * FROM augment_traces WHERE run_id = ? ORDER BY id", (run_id,))
    return [_row(r) for r in rows]


def latest_traces(store: Store, limit: int = 20) -> list[dict]:
    rows = store.db.execute(
        "SELECT t.* FROM augment_traces t JOIN runs r ON r.id = t.run_id WHERE r.project_id = ?"
        " ORDER BY t.id DESC LIMIT ?",
        (store.project_id, limit),
    )
    return [_row(r) for r in rows]
