"""Store helpers for the optimize stage's table (``optimize_measurements``, migration 040)."""

from __future__ import annotations

import json

from odyssey.store import Store, _row, now

_COLUMNS = (
    "size_mb",
    "load_rss_gb",
    "peak_rss_gb",
    "prefill_tok_s",
    "decode_tok_s",
    "decode_tok_s_batched",
    "p50_latency_ms",
    "p95_latency_ms",
)


def add_measurement(
    store: Store,
    *,
    candidate_id: int | None,
    parent_id: int | None,
    run_id: int | None,
    model_ref: str,
    method: str | None,
    settings_key: str,
    measurement: dict,
    comparison: dict | None = None,
) -> int:
    detail = {k: v for k, v in measurement.items() if k not in _COLUMNS and k not in {"metrics", "rows"}}
    values = [measurement.get(c) for c in _COLUMNS]
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO optimize_measurements (project_id, candidate_id, parent_id, run_id, model_ref, method,"
            " backend,"
            " settings_key, " + ", ".join(_COLUMNS) + ", metrics_json, comparison_json, detail_json, created_at)"
            " VALUES (" + ", ".join(["?"] * (8 + len(_COLUMNS) + 4)) + ")",
            (
                store.project_id,
                candidate_id,
                parent_id,
                run_id,
                model_ref,
                method,
                measurement.get("backend"),
                settings_key,
                *values,
                json.dumps(measurement.get("metrics", {})),
                json.dumps(comparison or {}),
                json.dumps(detail, default=str),
                now(),
            ),
        )
    return cur.lastrowid


def latest_measurement(
    store: Store, candidate_id: int, settings_key: str | None = None, model_ref: str | None = None
) -> dict | None:
    sql = "SELECT * FROM optimize_measurements WHERE candidate_id = ?"
    params: list = [candidate_id]
    if settings_key:
        sql += " AND settings_key = ?"
        params.append(settings_key)
    if model_ref:
        sql += " AND model_ref = ?"
        params.append(model_ref)
    row = store.db.execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
    return _as_measurement(_row(row)) if row else None


def measurements(store: Store) -> list[dict]:
    """The latest measurement of each measured candidate of the project."""
    rows = store.db.execute(
        "SELECT * FROM optimize_measurements WHERE id IN (SELECT MAX(id) FROM optimize_measurements"
        " WHERE project_id = ? GROUP BY candidate_id) ORDER BY id",
        (store.project_id,),
    )
    return [_as_measurement(_row(r)) for r in rows]


def _as_measurement(row: dict) -> dict:
    out = {**row.pop("detail", {}), **row}
    out["metrics"] = row.get("metrics", {})
    return out
