"""/v1/feedback: thumbs, ratings, corrections and preferences, tied to a captured answer (its
``request_id``), to a pair of the compare queue (``queue_id`` + ``choice``), or given whole."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from odyssey.deploy.gateway import Gateway
from odyssey.deploy.wire import APIError, FeedbackBody, FeedbackOut, error_docs, ok_doc

router = APIRouter(tags=["feedback"])


@router.post(
    "/v1/feedback",
    responses={**error_docs(400, 401, 403, 404, 413, 429, 500), **ok_doc(FeedbackOut, "the feedback item, stored")},
)
async def feedback(body: FeedbackBody, request: Request):
    from odyssey.store import deploy as sd

    gw = Gateway.of(request)
    store = gw.project.store
    key = gw.key(request)
    item: dict[str, Any] = {
        "key_id": key["id"],
        "annotator": body.annotator or key["name"],
        "source": body.source or "api",
        "comment": body.comment,
        "rating": body.rating,
        "request_id": body.request_id,
    }
    if body.request_id:
        item.update(_answer(store, body.request_id))
    if body.prompt is not None:
        item["prompt"] = body.prompt
    item.update(_kind(store, body, item))
    if gw.capture is None:
        feedback_id = sd.write_batch(store, [], [item])[0]
    else:
        feedback_id = await gw.capture.write(feedback=item)
    gw.counters[f"feedback_{item['kind']}"] += 1
    return {"id": feedback_id, "object": "feedback", "kind": item["kind"], "request_id": body.request_id}


def _answer(store, request_id: str) -> dict:
    """The captured request the feedback is about: its prompt (a chat's last user turn), output and candidate."""
    from odyssey.store import deploy as sd

    req = sd.request(store, request_id)
    if req is None:
        raise APIError(404, f"no captured request with id {request_id!r}", code="request_not_found", param="request_id")
    prompt = req["prompt"]
    if isinstance(prompt, list):  # chat: the last user turn is what was asked
        prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return {"prompt": prompt, "output": req["output"], "candidate": req["candidate"]}


def _kind(store, body: FeedbackBody, item: dict) -> dict:
    """What kind of feedback the body holds, and its fields; a 400 when it holds too little."""
    if body.queue_id is not None:
        return _queue_choice(store, body)
    if body.chosen is not None or body.rejected is not None:
        if body.chosen is None or body.rejected is None or item.get("prompt") is None:
            raise APIError(
                400, "a preference needs 'chosen', 'rejected' and a 'prompt' (or a request_id)", param="chosen"
            )
        return {"kind": "preference", "chosen": body.chosen, "rejected": body.rejected}
    if body.correction is not None:
        if item.get("prompt") is None:
            raise APIError(400, "a correction needs the 'request_id' it corrects (or a 'prompt')", param="request_id")
        return {"kind": "correction", "correction": body.correction, "thumbs": -1 if body.thumbs == "down" else None}
    if body.thumbs is not None:
        if not body.request_id:
            raise APIError(400, "thumbs need the 'request_id' of the answer", param="request_id")
        return {"kind": "thumbs", "thumbs": 1 if body.thumbs == "up" else -1}
    if body.rating is not None:
        if not body.request_id:
            raise APIError(400, "a rating needs the 'request_id' of the answer", param="request_id")
        return {"kind": "rating"}
    raise APIError(400, "empty feedback: send thumbs, rating, correction, chosen/rejected or queue_id+choice")


def _queue_choice(store, body: FeedbackBody) -> dict:
    """A choice between the two answers of a pending pair of the compare queue: a preference."""
    from odyssey.store import deploy as sd

    pair = sd.pair(store, body.queue_id)
    if pair is None or pair["status"] != "pending":
        raise APIError(404, f"no pending pair with queue_id {body.queue_id}", code="pair_not_found", param="queue_id")
    if body.choice is None:
        raise APIError(400, "'choice' ('a' or 'b') is required with queue_id", param="choice")
    a, b = (pair["a_text"], pair["b_text"]) if body.choice == "a" else (pair["b_text"], pair["a_text"])
    return {
        "kind": "preference",
        "prompt": pair["prompt"],
        "chosen": a,
        "rejected": b,
        "queue_id": pair["id"],
        "choice": body.choice,
        "source": body.source or pair["source"] or "compare-queue",
        "candidate": pair["a_label"] if body.choice == "a" else pair["b_label"],
    }
