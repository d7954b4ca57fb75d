"""Feedback export: preference pairs (the align stage's input) and SFT data, as JSONL.

preference: ``{"prompt", "chosen", "rejected", "source", "annotator", ...}`` from
  * explicit preferences (the compare page, ``/v1/feedback`` with chosen/rejected, the queue),
  * corrections ("write a better answer": the correction is chosen over the model's output),
  * thumbs: for one prompt, every thumbs-up answer over every thumbs-down answer.
sft: ``{"prompt", "completion", "source", "annotator"}`` from corrections, thumbs-up answers and
  chosen answers (TRL's prompt-completion format).
``prompt`` is what the user asked (the last user turn), which the align and adapt stages render
through the candidate's prompt config like any example input.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

from odyssey.errors import OdysseyError

FORMATS = ("preference", "sft")


def preference_pairs(store) -> list[dict]:
    from odyssey.store import deploy as sd

    pairs = []
    thumbs: dict[str, dict[int, list[dict]]] = {}
    for f in sd.feedback(store):
        base = {
            "source": f"feedback:{f['kind']}" + (f"/{f['source']}" if f["source"] else ""),
            "annotator": f["annotator"],
            "candidate": f["candidate"],
            "feedback_id": f["id"],
            "request_id": f["request_id"],
        }
        if f["kind"] == "preference" and f["chosen"] is not None and f["prompt"] is not None:
            pairs.append({"prompt": f["prompt"], "chosen": f["chosen"], "rejected": f["rejected"], **base})
        elif f["kind"] == "correction" and f["output"] is not None and f["correction"] != f["output"]:
            pairs.append({"prompt": f["prompt"], "chosen": f["correction"], "rejected": f["output"], **base})
        elif f["kind"] == "thumbs" and f["prompt"] is not None and f["output"] is not None:
            thumbs.setdefault(f["prompt"], {}).setdefault(f["thumbs"], []).append({**f, **base})
    for prompt, by_vote in thumbs.items():
        for up, down in product(by_vote.get(1, []), by_vote.get(-1, [])):
            if up["output"] != down["output"]:
                pairs.append(
                    {
                        "prompt": prompt,
                        "chosen": up["output"],
                        "rejected": down["output"],
                        "source": "feedback:thumbs",
                        "annotator": up["annotator"],
                        "candidate": up["candidate"],
                        "feedback_id": up["id"],
                        "request_id": up["request_id"],
                    }
                )
    return pairs


def sft_rows(store) -> list[dict]:
    from odyssey.store import deploy as sd

    rows, seen = [], set()
    for f in sd.feedback(store):
        completion = {
            "correction": f["correction"],
            "preference": f["chosen"],
            "thumbs": f["output"] if f["thumbs"] == 1 else None,
        }.get(f["kind"])
        if completion is None or f["prompt"] is None or (f["prompt"], completion) in seen:
            continue
        seen.add((f["prompt"], completion))
        rows.append(
            {
                "prompt": f["prompt"],
                "completion": completion,
                "source": f"feedback:{f['kind']}",
                "annotator": f["annotator"],
                "candidate": f["candidate"],
                "feedback_id": f["id"],
            }
        )
    return rows


def export_feedback(project, format: str = "preference", out: Path | None = None) -> tuple[Path, int]:
    """Write the JSONL file (default: .odyssey/exports/feedback-<format>.jsonl); returns (path, rows)."""
    if format not in FORMATS:
        raise OdysseyError(f"unknown export format {format!r}", hint=f"formats: {', '.join(FORMATS)}")
    rows = preference_pairs(project.store) if format == "preference" else sft_rows(project.store)
    path = Path(out) if out else project.state_dir / "exports" / f"feedback-{format}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path, len(rows)
