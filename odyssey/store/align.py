"""Store helpers for the align stage: preference sets (with per-pair provenance) and reward models.

A preference set is content-addressed: its sha256 covers every pair (prompt, chosen, rejected,
source, annotator), so an aligned candidate names exactly the data it was trained on. Saving
the same pairs twice returns the existing set.
"""

from __future__ import annotations

import json
from typing import Any

from odyssey.store import Store, _row, now


def save_preference_set(
    store: Store,
    name: str,
    sha256: str,
    pairs: list[dict[str, Any]],
    *,
    sources: dict | None = None,
    path: str | None = None,
    run_id: int | None = None,
) -> int:
    existing = store.db.execute(
        "SELECT id FROM preference_sets WHERE project_id = ? AND sha256 = ?", (store.project_id, sha256)
    ).fetchone()
    if existing:
        return existing["id"]
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO preference_sets (project_id, name, sha256, n_pairs, sources_json, path, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (store.project_id, name, sha256, len(pairs), json.dumps(sources or {}), path, run_id, now()),
        )
        set_id = cur.lastrowid
        db.executemany(
            "INSERT INTO preference_pairs (set_id, prompt, chosen, rejected, source, annotator, meta_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    set_id,
                    p["prompt"],
                    p["chosen"],
                    p["rejected"],
                    p.get("source", "unknown"),
                    p.get("annotator"),
                    json.dumps(p.get("meta") or {}, default=str),
                )
                for p in pairs
            ],
        )
    return set_id


def preference_set(store: Store, ref: int | str | None = None) -> dict | None:
    """A set by id, name or sha256 (prefix); the latest one when ``ref`` is None."""
    base = "SELECT * FROM preference_sets WHERE project_id = ?"
    if ref is None:
        row = store.db.execute(base + " ORDER BY id DESC LIMIT 1", (store.project_id,)).fetchone()
    elif isinstance(ref, int):
        row = store.db.execute(base + " AND id = ?", (store.project_id, ref)).fetchone()
    else:
        row = store.db.execute(
            base + " AND (name = ? OR sha256 LIKE ?) ORDER BY id DESC LIMIT 1", (store.project_id, ref, ref + "%")
        ).fetchone()
    return _row(row) if row else None


def preference_sets(store: Store) -> list[dict]:
    rows = store.db.execute("SELECT * FROM preference_sets WHERE project_id = ? ORDER BY id", (store.project_id,))
    return [_row(r) for r in rows]


def preference_pairs(store: Store, set_id: int) -> list[dict]:
    rows = store.db.execute("SELECT * FROM preference_pairs WHERE set_id = ? ORDER BY id", (set_id,))
    return [_row(r) for r in rows]


def save_reward_model(
    store: Store,
    name: str,
    path: str,
    base_ref: str,
    preference_set_id: int | None,
    metrics: dict,
    run_id: int | None = None,
) -> int:
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO reward_models (project_id, name, path, base_ref, preference_set_id, metrics_json, run_id,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                store.project_id,
                name,
                path,
                base_ref,
                preference_set_id,
                json.dumps(metrics, default=str),
                run_id,
                now(),
            ),
        )
    return cur.lastrowid


def reward_model(store: Store, ref: int | str | None = None) -> dict | None:
    """A reward model by id or name; the latest when ``ref`` is None."""
    base = "SELECT * FROM reward_models WHERE project_id = ?"
    if ref is None:
        row = store.db.execute(base + " ORDER BY id DESC LIMIT 1", (store.project_id,)).fetchone()
    elif isinstance(ref, int):
        row = store.db.execute(base + " AND id = ?", (store.project_id, ref)).fetchone()
    else:
        row = store.db.execute(base + " AND name = ? ORDER BY id DESC LIMIT 1", (store.project_id, ref)).fetchone()
    return _row(row) if row else None


def reward_models(store: Store) -> list[dict]:
    rows = store.db.execute("SELECT * FROM reward_models WHERE project_id = ? ORDER BY id", (store.project_id,))
    return [_row(r) for r in rows]


def stored_outputs(store: Store, splits: tuple[str, ...]) -> list[dict]:
    """Every output earlier runs of this project stored for ``splits``, oldest first: prompt, prediction,
    references (decoded), example_id and the name of the candidate that answered (None if none)."""
    rows = store.db.execute(
        "SELECT o.prompt, o.prediction, o.references_json, o.example_id, c.name AS candidate FROM outputs o"
        " LEFT JOIN candidates c ON c.id = o.candidate_id JOIN runs r ON r.id = o.run_id"
        f" WHERE r.project_id = ? AND o.split IN ({', '.join('?' * len(splits))}) ORDER BY o.id",
        (store.project_id, *splits),
    )
    return [_row(r) for r in rows]


def feedback_rows(store: Store) -> list[dict]:
    """What `odyssey serve` captured (thumbs, corrections, choices), read-only; [] before the deploy stage exists."""
    exists = store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone()
    if not exists:
        return []
    rows = store.db.execute("SELECT * FROM feedback WHERE project_id = ? ORDER BY id", (store.project_id,))
    return [_row(r) for r in rows]
