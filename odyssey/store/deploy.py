"""Store helpers for the deploy stage: API keys, captured requests, feedback, the preference queue.

Functions take a :class:`~odyssey.store.Store`; all SQL is parameterized. The capture writer
(``odyssey.deploy.capture``) calls :func:`write_batch` from its own thread with its own Store,
so a whole batch of requests and feedback lands in one transaction (group commit).
"""

from __future__ import annotations

import json
from typing import Any

from odyssey.store import Store, _row, now

# ---- keys -------------------------------------------------------------------------------------


def add_key(
    store: Store,
    name: str,
    prefix: str,
    key_hash: str,
    scopes: list[str],
    rate_limit_rpm: int | None = None,
    max_concurrency: int | None = None,
) -> int:
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO api_keys (project_id, name, prefix, key_hash, scopes_json, rate_limit_rpm, max_concurrency,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (store.project_id, name, prefix, key_hash, json.dumps(scopes), rate_limit_rpm, max_concurrency, now()),
        )
    return cur.lastrowid


def key_by_hash(store: Store, key_hash: str) -> dict | None:
    row = store.db.execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
    return _row(row)


def keys(store: Store, include_revoked: bool = False) -> list[dict]:
    sql = "SELECT * FROM api_keys WHERE project_id = ?" + ("" if include_revoked else " AND revoked_at IS NULL")
    return [_row(r) for r in store.db.execute(sql + " ORDER BY id", (store.project_id,))]


def revoke_key(store: Store, name_or_prefix: str) -> int:
    """Revoke every active key with that name or prefix; returns how many."""
    with store.transaction() as db:
        cur = db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE project_id = ? AND revoked_at IS NULL"
            " AND (name = ? OR prefix = ?)",
            (now(), store.project_id, name_or_prefix, name_or_prefix),
        )
    return cur.rowcount


def touch_keys(db, key_ids: set[int], stamp: str) -> None:
    db.executemany("UPDATE api_keys SET last_used_at = ? WHERE id = ?", [(stamp, k) for k in key_ids])


# ---- capture ----------------------------------------------------------------------------------

REQUEST_COLUMNS = (
    "request_id",
    "key_id",
    "candidate",
    "endpoint",
    "params_json",
    "prompt_json",
    "rendered_prompt",
    "output",
    "status",
    "error",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
)
FEEDBACK_COLUMNS = (
    "request_id",
    "key_id",
    "kind",
    "rating",
    "thumbs",
    "prompt",
    "output",
    "correction",
    "chosen",
    "rejected",
    "candidate",
    "source",
    "annotator",
    "comment",
)


def _request_values(project_id, r: dict, stamp: str) -> tuple:
    r = dict(r)
    r["params_json"] = json.dumps(r.pop("params", {}) or {}, default=str)
    r["prompt_json"] = json.dumps(r.pop("prompt", None), default=str)
    return (project_id, *(r.get(c) for c in REQUEST_COLUMNS), stamp)


def write_batch(store: Store, requests: list[dict], feedback: list[dict]) -> list[int]:
    """Insert captured requests and feedback in one transaction; returns the feedback row ids."""
    stamp = now()
    ids = []
    with store.transaction() as db:
        if requests:
            db.executemany(
                f"INSERT INTO serve_requests (project_id, {', '.join(REQUEST_COLUMNS)}, created_at)"
                f" VALUES ({', '.join('?' * (len(REQUEST_COLUMNS) + 2))})",
                [_request_values(store.project_id, r, stamp) for r in requests],
            )
            touch_keys(db, {r["key_id"] for r in requests if r.get("key_id")}, stamp)
        for f in feedback:
            cur = db.execute(
                f"INSERT INTO feedback (project_id, {', '.join(FEEDBACK_COLUMNS)}, created_at)"
                f" VALUES ({', '.join('?' * (len(FEEDBACK_COLUMNS) + 2))})",
                (store.project_id, *(f.get(c) for c in FEEDBACK_COLUMNS), stamp),
            )
            ids.append(cur.lastrowid)
            if f.get("queue_id"):
                db.execute(
                    "UPDATE preference_queue SET status = 'done', choice = ?, annotator = ?, feedback_id = ?,"
                    " decided_at = ? WHERE id = ? AND status = 'pending'",
                    (f.get("choice"), f.get("annotator"), cur.lastrowid, stamp, f["queue_id"]),
                )
    return ids


def request(store: Store, request_id: str) -> dict | None:
    row = store.db.execute("SELECT * FROM serve_requests WHERE request_id = ?", (request_id,)).fetchone()
    return _row(row)


def requests(store: Store, limit: int | None = None, candidate: str | None = None) -> list[dict]:
    sql, params = "SELECT * FROM serve_requests WHERE project_id = ?", [store.project_id]
    if candidate:
        sql += " AND candidate = ?"
        params.append(candidate)
    sql += " ORDER BY id DESC" + (" LIMIT ?" if limit else "")
    if limit:
        params.append(limit)
    return [_row(r) for r in store.db.execute(sql, params)]


def count_requests(store: Store) -> int:
    row = store.db.execute("SELECT COUNT(*) FROM serve_requests WHERE project_id = ?", (store.project_id,)).fetchone()
    return row[0]


def feedback(store: Store, kind: str | None = None) -> list[dict]:
    sql, params = "SELECT * FROM feedback WHERE project_id = ?", [store.project_id]
    if kind:
        sql += " AND kind = ?"
        params.append(kind)
    return [_row(r) for r in store.db.execute(sql + " ORDER BY id", params)]


# ---- preference queue (pairs waiting for a person's choice; the align stage fills it) ---------


def enqueue_pairs(store: Store, pairs: list[dict[str, Any]]) -> int:
    """Add pairs ``{prompt, a, b, a_label?, b_label?, source?}`` for people to judge on the compare page."""
    stamp = now()
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO preference_queue (project_id, prompt, a_text, b_text, a_label, b_label, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    store.project_id,
                    p["prompt"],
                    p["a"],
                    p["b"],
                    p.get("a_label"),
                    p.get("b_label"),
                    p.get("source"),
                    stamp,
                )
                for p in pairs
            ],
        )
    return len(pairs)


def next_pair(store: Store, after_id: int = 0) -> dict | None:
    row = store.db.execute(
        "SELECT * FROM preference_queue WHERE project_id = ? AND status = 'pending' AND id > ? ORDER BY id LIMIT 1",
        (store.project_id, after_id),
    ).fetchone()
    return _row(row)


def pending_pairs(store: Store) -> int:
    return store.db.execute(
        "SELECT COUNT(*) FROM preference_queue WHERE project_id = ? AND status = 'pending'", (store.project_id,)
    ).fetchone()[0]


def pair(store: Store, queue_id: int) -> dict | None:
    return _row(store.db.execute("SELECT * FROM preference_queue WHERE id = ?", (queue_id,)).fetchone())
