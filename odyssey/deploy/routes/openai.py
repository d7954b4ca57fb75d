"""OpenAI's routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Request

from odyssey.deploy.gateway import Gateway, run_generation
from odyssey.deploy.wire import (
    GEN_ERRORS,
    KEYED_ERRORS,
    APIError,
    ChatBody,
    ChatCompletionOut,
    CompletionBody,
    EmbeddingBody,
    EmbeddingList,
    ModelList,
    TextCompletionOut,
    ok_doc,
)

PRIVATE_INFO = ("upstream", "pid", "gguf", "model", "path", "log")  # where a backend runs: admin keys only

router = APIRouter(tags=["openai"])


@router.get("/v1/models", responses={**KEYED_ERRORS, **ok_doc(ModelList)})
async def list_models(request: Request):
    """The served candidates. Where a backend runs (upstream address, pid, model files) is
    shown to admin keys only."""
    gw = Gateway.of(request)
    admin = "admin" in gw.key(request)["scopes"]
    data = []
    for s in gw.models.values():
        info = s.backend.info()
        entry = {
            "id": s.name,
            "object": "model",
            "created": int(gw.started),
            "owned_by": gw.project.spec.name,
            "prompt_mode": s.mode,
            "turns": s.turns(),
        }
        if admin:
            entry.update(model_ref=s.model_ref, **info)
        else:
            entry.update({k: v for k, v in info.items() if k not in PRIVATE_INFO})
        data.append(entry)
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", responses={**GEN_ERRORS, **ok_doc(ChatCompletionOut, stream=True)})
async def chat_completions(body: ChatBody, request: Request):
    gw = Gateway.of(request)
    key = gw.key(request)
    served = gw.model(body.model)
    params = gw.params(body, body.max_completion_tokens or body.max_tokens)
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    single = served.turns() == "single" and messages[-1]["role"] == "user"
    # what reaches the model: in single-turn task mode, the system text and the last user turn
    sent = ([m for m in messages if m["role"] in ("system", "developer")] + [messages[-1]]) if single else messages
    await gw.check_input(served, [m["content"] for m in sent], "messages")
    rendered = await _render_chat(served, body)
    note = None
    if single:
        users = sum(m["role"] == "user" for m in messages)
        note = "task: the last user turn alone, through the candidate's prompt" + (
            f" ({users - 1} earlier turn(s) not sent: this candidate is single-turn)" if users > 1 else ""
        )
    return await run_generation(gw, body, "chat", served, key, messages, rendered, params, note)


async def _render_chat(served, body: ChatBody) -> str:
    try:
        return await asyncio.to_thread(served.render_chat, body.messages)
    except Exception as exc:
        import jinja2

        if not isinstance(exc, jinja2.TemplateError):
            raise
        # the model's own chat template refused these messages (e.g. "System role not supported"),
        # or the sandbox stopped it: the client's input, so a 400 naming the reason
        raise APIError(
            400,
            f"the model's chat template refused these messages: {str(exc)[:300]}",
            code="chat_template_error",
            param="messages",
        ) from None


@router.post("/v1/completions", responses={**GEN_ERRORS, **ok_doc(TextCompletionOut, stream=True)})
async def completions(body: CompletionBody, request: Request):
    gw = Gateway.of(request)
    key = gw.key(request)
    served = gw.model(body.model)
    params = gw.params(body, body.max_tokens)
    await gw.check_input(served, [body.prompt], "prompt")
    return await run_generation(gw, body, "completion", served, key, body.prompt, body.prompt, params)


@router.post("/v1/embeddings", responses={**GEN_ERRORS, **ok_doc(EmbeddingList)})
async def embeddings(body: EmbeddingBody, request: Request):
    from odyssey.models.embeddings import DEFAULT_EMBEDDER, embed

    gw = Gateway.of(request)
    key = gw.key(request)
    if body.model not in (None, "all-minilm-l6-v2", DEFAULT_EMBEDDER, "text-embedding-ada-002"):
        raise APIError(
            404,
            f"embedding model {body.model!r} is not served; use 'all-minilm-l6-v2'",
            code="model_not_found",
            param="model",
        )
    gw.acquire(key)
    try:
        vectors = await asyncio.to_thread(embed, body.input)
    finally:
        gw.release(key)
    tokens = sum(len(t.split()) for t in body.input)
    await gw.record(
        {
            "request_id": "emb-" + secrets.token_hex(12),
            "key_id": key["id"],
            "candidate": "all-minilm-l6-v2",
            "endpoint": "embeddings",
            "params": {"n": len(body.input)},
            "prompt": body.input,
            "output": None,
            "status": 200,
            "prompt_tokens": tokens,
            "completion_tokens": 0,
            "latency_ms": None,
        }
    )
    return {
        "object": "list",
        "model": "all-minilm-l6-v2",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode_vector(vector, encoding: str):
    """OpenAI's encodings: a list of floats, or base64 of little-endian float32 bytes."""
    if encoding == "base64":
        import base64

        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
