"""The gateway: an OpenAI-compatible API (FastAPI) with keys, limits, capture, feedback and the web UI.

    /v1/models, /v1/chat/completions, /v1/completions (stream: true -> server-sent events),
    /v1/embeddings (packaged MiniLM), /v1/feedback, /health, /metrics, /docs + /openapi.json, /ui/

Every route but /health, the UI's static files and the API docs needs ``Authorization: Bearer
<key>``. Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with its
status codes (400 bad input, 401 no/bad key, 403 scope, 404 unknown model or id, 413 too large,
429 rate or concurrency limit). Each generation is recorded (prompt, output, candidate, params,
latency, tokens, key) by :mod:`odyssey.deploy.capture` before its response ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from odyssey.deploy.backends import Backend, Delta, GenParams
from odyssey.spec import DeploySpec

STATIC = Path(__file__).parent / "static"


# ---- errors -----------------------------------------------------------------------------------


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status,
                        headers=exc.headers)


# ---- request bodies (OpenAI's wire format; unknown fields are ignored as OpenAI's server does) --


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise APIError(400, "only text content parts are supported", param="messages")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class _GenBody(_Body):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value):
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


class ChatBody(_GenBody):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_GenBody):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _single(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("send one prompt per request (a list of one string is accepted)")
            return value[0]
        return value


class EmbeddingBody(_Body):
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64 by default

    @field_validator("input")
    @classmethod
    def _texts(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > 256:
            raise ValueError("input takes 1 to 256 strings")
        return texts


class FeedbackBody(_Body):
    request_id: str | None = Field(None, max_length=100)
    rating: float | None = Field(None, ge=0, le=10)
    thumbs: Literal["up", "down"] | None = None
    correction: str | None = Field(None, max_length=100_000)
    prompt: str | None = Field(None, max_length=200_000)
    chosen: str | None = Field(None, max_length=100_000)
    rejected: str | None = Field(None, max_length=100_000)
    queue_id: int | None = Field(None, ge=1, le=2**62)
    choice: Literal["a", "b"] | None = None
    annotator: str | None = Field(None, max_length=100)
    source: str | None = Field(None, max_length=100)
    comment: str | None = Field(None, max_length=10_000)


# ---- served models -----------------------------------------------------------------------------


@dataclass
class Served:
    """One candidate behind the gateway: its backend and how it renders prompts."""

    name: str
    model_ref: str
    backend: Backend
    prompt: Any = None  # odyssey.prompts.PromptConfig or None
    pool: list = field(default_factory=list)
    mode: str = "task"
    _selector: Any = None

    def render_chat(self, messages: list[Message]) -> str:
        from odyssey.data import Example
        from odyssey.prompts import DemoSelector, PromptConfig, has_chat_template, render

        tok = self.backend.tokenizer
        turns = [(m.role if m.role != "developer" else "system", m.text()) for m in messages]
        system = [t for r, t in turns if r == "system"]
        others = [(r, t) for r, t in turns if r != "system"]
        if self.mode == "task" and self.prompt is not None and len(others) == 1 and others[0][0] == "user":
            cfg = self.prompt
            if system:
                cfg = PromptConfig.from_dict({**cfg.as_dict(), "system": "\n".join(system)})
            if self._selector is None:
                self._selector = DemoSelector(self.pool, cfg.selection, min(cfg.shots, len(self.pool)), cfg.seed)
            example = Example("request", others[0][1])
            budget = max(self.backend.context_length - 64, 16)
            return render(tok, cfg, example, self._selector(example), budget).text
        if has_chat_template(tok):
            return tok.apply_chat_template([{"role": r, "content": t} for r, t in turns], tokenize=False,
                                           add_generation_prompt=True)
        return "\n\n".join(f"{r}: {t}" for r, t in turns) + "\n\nassistant:"

    def encode(self, text: str) -> list[int]:
        return self.backend.tokenizer(text, add_special_tokens=self.backend.add_special_tokens)["input_ids"]


# ---- limits ------------------------------------------------------------------------------------


class Limiter:
    """Per-key token bucket (requests per minute) and in-flight count. In memory: one process serves."""

    def __init__(self):
        self.buckets: dict[int, tuple[float, float]] = {}
        self.inflight: dict[int, int] = defaultdict(int)

    def take(self, key_id: int, rpm: int) -> float:
        """0 when allowed, else the seconds until a request will be."""
        now = time.monotonic()
        tokens, last = self.buckets.get(key_id, (float(rpm), now))
        tokens = min(float(rpm), tokens + (now - last) * rpm / 60.0)
        if tokens < 1:
            self.buckets[key_id] = (tokens, now)
            return (1 - tokens) * 60.0 / rpm
        self.buckets[key_id] = (tokens - 1, now)
        return 0.0


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = JSONResponse(error_body(f"request body is larger than the limit of {self.limit} bytes",
                                          "invalid_request_error", "request_too_large"), status_code=413)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise APIError(413, f"request body is larger than the limit of {self.limit} bytes",
                                   code="request_too_large")
            return message

        return await self.app(scope, counted, send)


# ---- the app -----------------------------------------------------------------------------------


class Gateway:
    def __init__(self, project, served: list[Served], settings: DeploySpec, capture=None):
        self.project, self.settings, self.capture = project, settings, capture
        self.models = {s.name: s for s in served}
        self.default = served[0].name
        self.limiter = Limiter()
        self.counters: dict[str, float] = defaultdict(float)
        self.started = time.time()

    # -- auth and limits --
    def authenticate(self, request: Request, scope: str) -> dict:
        from odyssey.deploy.keys import verify

        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (create one with "
                                "`odyssey keys create --name NAME`)", "invalid_request_error", "invalid_api_key")
        row = verify(self.project.store, key)
        if row is None:
            raise APIError(401, "invalid or revoked API key", "invalid_request_error", "invalid_api_key")
        if scope not in row["scopes"] and "admin" not in row["scopes"]:
            raise APIError(403, f"this key lacks the '{scope}' scope (it has: {', '.join(row['scopes'])})",
                           "permission_error", "insufficient_scope")
        rpm = row["rate_limit_rpm"] or self.settings.rate_limit_rpm
        wait = self.limiter.take(row["id"], rpm)
        if wait:
            self.counters["rate_limited"] += 1
            raise APIError(429, f"rate limit of {rpm} requests per minute reached for this key; retry in {wait:.1f} s",
                           "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": str(max(1, round(wait)))})
        return row

    def acquire(self, key: dict):
        limit = key["max_concurrency"] or self.settings.max_concurrency
        if self.limiter.inflight[key["id"]] >= limit:
            self.counters["concurrency_limited"] += 1
            raise APIError(429, f"this key already has {limit} requests in flight (its concurrency limit)",
                           "rate_limit_error", "concurrency_limit_exceeded", headers={"Retry-After": "1"})
        self.limiter.inflight[key["id"]] += 1

    def release(self, key: dict):
        self.limiter.inflight[key["id"]] -= 1

    def model(self, name: str | None) -> Served:
        if not name or name in self.models:
            return self.models[name or self.default]
        for served in self.models.values():  # also accept the model reference itself
            if served.model_ref == name:
                return served
        raise APIError(404, f"the model {name!r} is not served here; served: {', '.join(self.models)}",
                       "invalid_request_error", "model_not_found", "model")

    def params(self, body: _GenBody, max_tokens: int | None) -> GenParams:
        limit = self.settings.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise APIError(400, f"max_tokens={max_tokens} is over this server's limit of {limit}",
                           code="max_tokens_too_large", param="max_tokens")
        return GenParams(max_tokens=max_tokens or min(self.settings.default_max_tokens, limit),
                         temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=list(body.stop or []))

    def check_prompt(self, served: Served, ids: list[int], params: GenParams):
        if not ids:
            raise APIError(400, "the prompt is empty", code="empty_prompt", param="prompt")
        limit = min(self.settings.max_prompt_tokens, max(served.backend.context_length - params.max_tokens, 1))
        if len(ids) > limit:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this server accepts at most {limit} "
                                f"(max_prompt_tokens {self.settings.max_prompt_tokens}, context "
                                f"{served.backend.context_length} minus max_tokens {params.max_tokens})",
                           code="context_length_exceeded", param="messages")

    async def record(self, row: dict):
        self.counters[f"requests_{row['endpoint']}_{row['status']}"] += 1
        self.counters["prompt_tokens"] += row.get("prompt_tokens") or 0
        self.counters["completion_tokens"] += row.get("completion_tokens") or 0
        if self.capture is not None:
            await self.capture.write(request=row)


def _encode_vector(vector, encoding: str):
    """OpenAI's encodings: a list of floats, or base64 of little-endian float32 bytes."""
    if encoding == "base64":
        import base64

        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


async def _generate(served: Served, ids: list[int], params: GenParams):
    """The backend's deltas with stop strings applied (the gateway owns stop handling for every backend)."""
    text, held = "", ""
    async for delta in served.backend.stream(ids, params):
        if delta.finish_reason:
            if held:
                yield Delta(held)
            yield delta
            return
        if not params.stop:
            yield delta
            continue
        held += delta.text
        cut = min((held.find(s) for s in params.stop if s in held), default=-1)
        if cut >= 0:
            if held[:cut]:
                yield Delta(held[:cut])
            yield Delta("", "stop", len(ids), None)
            return
        # Keep back a tail that could be the start of a stop string.
        keep = max((len(s) - 1 for s in params.stop), default=0)
        emit, held = (held[:-keep], held[-keep:]) if keep and len(held) > keep else ("", held) if keep else (held, "")
        if emit:
            yield Delta(emit)


def create_app(project, served: list[Served], settings: DeploySpec | None = None, *, capture=None,
               startup=None, shutdown=None) -> FastAPI:
    """The FastAPI app. ``startup``/``shutdown`` are async callables run in its lifespan."""
    from contextlib import asynccontextmanager

    settings = settings or project.spec.deploy
    gw = Gateway(project, served, settings, capture)

    @asynccontextmanager
    async def lifespan(app):
        if startup is not None:
            await startup()
        try:
            yield
        finally:
            if shutdown is not None:
                await shutdown()

    app = FastAPI(title="Odyssey", version="1", lifespan=lifespan,
                  description=f"OpenAI-compatible API for the project {project.spec.name!r}: "
                              f"{', '.join(s.name for s in served)}")
    app.state.gateway = gw
    if settings.cors_origins:  # CORS is off unless origins are listed in deploy.cors_origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON"
        elif not loc:
            msg = "the request body must be a JSON object (send Content-Type: application/json)"
        elif first.get("type") == "missing":
            msg = f"'{param}' is required"
        elif param:
            msg = f"'{param}': {msg}"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem(s))"
        return error_response(APIError(400, msg, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", kind), status_code=exc.status_code)

    # -- health, metrics, models --
    @app.get("/health", tags=["ops"])
    async def health():
        return {"status": "ok", "models": list(gw.models), "uptime_s": round(time.time() - gw.started, 1)}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(request: Request):
        gw.authenticate(request, "inference")
        # Prometheus text format, written by hand: a few counters do not need prometheus_client.
        lines = ["# TYPE odyssey_uptime_seconds gauge", f"odyssey_uptime_seconds {time.time() - gw.started:.1f}"]
        for name, value in sorted(gw.counters.items()):
            lines.append(f"odyssey_{name}_total {value:g}")
        lines.append(f"odyssey_inflight {sum(gw.limiter.inflight.values())}")
        if gw.capture is not None:
            lines += [f"odyssey_capture_written_total {gw.capture.written}",
                      f"odyssey_capture_pending {gw.capture.pending}"]
        return "\n".join(lines) + "\n"

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request):
        gw.authenticate(request, "inference")
        return {"object": "list", "data": [
            {"id": s.name, "object": "model", "created": int(gw.started), "owned_by": project.spec.name,
             "model_ref": s.model_ref, **s.backend.info()} for s in gw.models.values()]}

    # -- generation --
    async def run_generation(request: Request, body: _GenBody, endpoint: str, served: Served, key: dict,
                             prompt_record: Any, rendered: str, params: GenParams):
        ids = await asyncio.to_thread(served.encode, rendered)
        gw.check_prompt(served, ids, params)
        gw.acquire(key)  # released when the answer is complete (or the stream ends)
        request_id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + secrets.token_hex(12)
        created = int(time.time())
        t0 = time.perf_counter()
        record = {"request_id": request_id, "key_id": key["id"], "candidate": served.name, "endpoint": endpoint,
                  "params": {k: v for k, v in body.model_dump().items() if k not in ("messages", "prompt")},
                  "prompt": prompt_record, "rendered_prompt": rendered}
        headers = {"x-request-id": request_id}

        def finish_record(text: str, final: Delta | None, status: int, error: str | None = None) -> dict:
            return {**record, "output": text, "status": status, "error": error,
                    "finish_reason": final.finish_reason if final else None,
                    "prompt_tokens": (final.prompt_tokens if final and final.prompt_tokens else len(ids)),
                    "completion_tokens": final.completion_tokens if final else None,
                    "latency_ms": (time.perf_counter() - t0) * 1000}

        def counted(final: Delta, text: str) -> Delta:
            if final.completion_tokens is None:
                final.completion_tokens = len(served.backend.tokenizer(text, add_special_tokens=False)["input_ids"])
            return final

        if not body.stream:
            text, final = "", None
            try:
                complete = getattr(served.backend, "complete", None)
                if complete is not None:
                    final = await complete(ids, params)
                    text, final.text = final.text, ""
                    cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                    if cut >= 0:  # the upstream stops on these too; this keeps every backend alike
                        text, final.finish_reason = text[:cut], "stop"
                else:
                    async for delta in _generate(served, ids, params):
                        text += delta.text
                        if delta.finish_reason:
                            final = delta
            finally:
                gw.release(key)
            if final is None or final.finish_reason.startswith("error:"):
                message = final.finish_reason[6:] if final else "generation ended without a result"
                await gw.record(finish_record(text, final, 500, message))
                raise APIError(500, f"generation failed: {message}", "server_error", "backend_error")
            final = counted(final, text)
            await gw.record(finish_record(text, final, 200))
            usage = {"prompt_tokens": final.prompt_tokens or len(ids), "completion_tokens": final.completion_tokens,
                     "total_tokens": (final.prompt_tokens or len(ids)) + final.completion_tokens}
            if endpoint == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                          "finish_reason": final.finish_reason}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": (rendered + text) if getattr(body, "echo", False) else text,
                          "logprobs": None, "finish_reason": final.finish_reason}
                obj = "text_completion"
            return JSONResponse({"id": request_id, "object": obj, "created": created, "model": served.name,
                                 "choices": [choice], "usage": usage, "system_fingerprint": None}, headers=headers)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"

        def event(payload: dict) -> str:
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        def chunk(delta: dict | str, finish: str | None = None) -> str:
            choice = ({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish} if endpoint == "chat"
                      else {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish})
            return event({"id": request_id, "object": obj, "created": created, "model": served.name,
                          "choices": [choice]})

        async def sse():
            text, final, recorded = "", None, False
            try:
                if endpoint == "chat":
                    yield chunk({"role": "assistant", "content": ""})
                async for delta in _generate(served, ids, params):
                    if delta.finish_reason:
                        final = delta
                        break
                    text += delta.text
                    yield chunk({"content": delta.text} if endpoint == "chat" else delta.text)
                if final is None or final.finish_reason.startswith("error:"):
                    message = final.finish_reason[6:] if final else "generation ended without a result"
                    recorded = True
                    await gw.record(finish_record(text, final, 500, message))
                    yield event(error_body(f"generation failed: {message}", "server_error", "backend_error"))
                    return
                final = counted(final, text)
                recorded = True
                await gw.record(finish_record(text, final, 200))  # committed before the last event is sent
                yield chunk({} if endpoint == "chat" else "", final.finish_reason)
                if include_usage:
                    pt = final.prompt_tokens or len(ids)
                    yield event({"id": request_id, "object": obj, "created": created, "model": served.name,
                                 "choices": [], "usage": {"prompt_tokens": pt, "completion_tokens": final.completion_tokens,
                                                          "total_tokens": pt + final.completion_tokens}})
                yield "data: [DONE]\n\n"
            finally:
                gw.release(key)
                if not recorded and gw.capture is not None:  # the client went away mid-stream: keep what it saw
                    gw.capture.submit(request=finish_record(text, final, 499, "client disconnected"))

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatBody, request: Request):
        key = gw.authenticate(request, "inference")
        served = gw.model(body.model)
        params = gw.params(body, body.max_completion_tokens or body.max_tokens)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        rendered = await asyncio.to_thread(served.render_chat, body.messages)
        return await run_generation(request, body, "chat", served, key, messages, rendered, params)

    @app.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionBody, request: Request):
        key = gw.authenticate(request, "inference")
        served = gw.model(body.model)
        params = gw.params(body, body.max_tokens)
        return await run_generation(request, body, "completion", served, key, body.prompt, body.prompt, params)

    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(body: EmbeddingBody, request: Request):
        from odyssey.models.embeddings import DEFAULT_EMBEDDER, embed

        key = gw.authenticate(request, "inference")
        if body.model not in (None, "all-minilm-l6-v2", DEFAULT_EMBEDDER, "text-embedding-ada-002"):
            raise APIError(404, f"embedding model {body.model!r} is not served; use 'all-minilm-l6-v2'",
                           code="model_not_found", param="model")
        gw.acquire(key)
        try:
            vectors = await asyncio.to_thread(embed, body.input)
        finally:
            gw.release(key)
        tokens = sum(len(t.split()) for t in body.input)
        await gw.record({"request_id": "emb-" + secrets.token_hex(12), "key_id": key["id"],
                         "candidate": "all-minilm-l6-v2", "endpoint": "embeddings", "params": {"n": len(body.input)},
                         "prompt": body.input, "output": None, "status": 200, "prompt_tokens": tokens,
                         "completion_tokens": 0, "latency_ms": None})
        return {"object": "list", "model": "all-minilm-l6-v2",
                "data": [{"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    # -- feedback --
    @app.post("/v1/feedback", tags=["feedback"])
    async def feedback(body: FeedbackBody, request: Request):
        from odyssey.store import deploy as sd

        key = gw.authenticate(request, "feedback")
        item: dict[str, Any] = {"key_id": key["id"], "annotator": body.annotator or key["name"],
                                "source": body.source or "api", "comment": body.comment, "rating": body.rating,
                                "request_id": body.request_id}
        if body.request_id:
            req = sd.request(project.store, body.request_id)
            if req is None:
                raise APIError(404, f"no captured request with id {body.request_id!r}", code="request_not_found",
                               param="request_id")
            prompt = req["prompt"]
            if isinstance(prompt, list):  # chat: the last user turn is what was asked
                prompt = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
            item.update(prompt=prompt, output=req["output"], candidate=req["candidate"])
        if body.prompt is not None:
            item["prompt"] = body.prompt
        if body.queue_id is not None:
            pair = sd.pair(project.store, body.queue_id)
            if pair is None or pair["status"] != "pending":
                raise APIError(404, f"no pending pair with queue_id {body.queue_id}", code="pair_not_found",
                               param="queue_id")
            if body.choice is None:
                raise APIError(400, "'choice' ('a' or 'b') is required with queue_id", param="choice")
            a, b = (pair["a_text"], pair["b_text"]) if body.choice == "a" else (pair["b_text"], pair["a_text"])
            item.update(kind="preference", prompt=pair["prompt"], chosen=a, rejected=b, queue_id=pair["id"],
                        choice=body.choice, source=body.source or pair["source"] or "compare-queue",
                        candidate=pair["a_label"] if body.choice == "a" else pair["b_label"])
        elif body.chosen is not None or body.rejected is not None:
            if body.chosen is None or body.rejected is None or item.get("prompt") is None:
                raise APIError(400, "a preference needs 'chosen', 'rejected' and a 'prompt' (or a request_id)",
                               param="chosen")
            item.update(kind="preference", chosen=body.chosen, rejected=body.rejected)
        elif body.correction is not None:
            if item.get("prompt") is None:
                raise APIError(400, "a correction needs the 'request_id' it corrects (or a 'prompt')",
                               param="request_id")
            item.update(kind="correction", correction=body.correction, thumbs=-1 if body.thumbs == "down" else None)
        elif body.thumbs is not None:
            if not body.request_id:
                raise APIError(400, "thumbs need the 'request_id' of the answer", param="request_id")
            item.update(kind="thumbs", thumbs=1 if body.thumbs == "up" else -1)
        elif body.rating is not None:
            if not body.request_id:
                raise APIError(400, "a rating needs the 'request_id' of the answer", param="request_id")
            item.update(kind="rating")
        else:
            raise APIError(400, "empty feedback: send thumbs, rating, correction, chosen/rejected or queue_id+choice")
        if gw.capture is None:
            feedback_id = sd.write_batch(project.store, [], [item])[0]
        else:
            feedback_id = await gw.capture.write(feedback=item)
        gw.counters[f"feedback_{item['kind']}"] += 1
        return {"id": feedback_id, "object": "feedback", "kind": item["kind"], "request_id": body.request_id}

    # -- web UI and its data --
    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/ui/")

    @app.get("/ui/api/board", tags=["ui"])
    async def board(request: Request):
        from odyssey.evaluate.board import build_board

        gw.authenticate(request, "inference")
        data = build_board(project).as_dict()  # a few indexed queries, on the loop's thread like all store reads
        data["plots"] = [
            {"id": a["id"], "run_id": a["run_id"], "url": f"/ui/api/artifacts/{a['id']}"}
            for a in project.store.db.execute(
                "SELECT a.id, a.run_id FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE r.project_id = ?"
                " AND a.kind = 'report-plot' ORDER BY a.id DESC LIMIT 4", (project.store.project_id,))]
        data["served"] = list(gw.models)
        return data

    @app.get("/ui/api/artifacts/{artifact_id}", tags=["ui"])
    async def artifact(request: Request, artifact_id: int = PathParam(..., ge=1, le=2**62)):
        # Only files the store recorded as report plots are served: no path comes from the request.
        row = project.store.db.execute(
            "SELECT a.path FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE a.id = ? AND r.project_id = ?"
            " AND a.kind = 'report-plot'", (artifact_id, project.store.project_id)).fetchone()
        if row is None or not Path(row["path"]).exists():
            raise APIError(404, f"no plot with id {artifact_id}", code="not_found")
        return FileResponse(row["path"], media_type="image/png")

    @app.get("/ui/api/pairs/next", tags=["ui"])
    async def next_pair(request: Request, after: int = Query(0, ge=0, le=2**62)):
        from odyssey.store import deploy as sd

        gw.authenticate(request, "feedback")
        pair = sd.next_pair(project.store, after)
        return {"pair": pair, "pending": sd.pending_pairs(project.store)}

    from fastapi.staticfiles import StaticFiles

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
    return app
