"""The gateway: an OpenAI-compatible API (FastAPI) with keys, limits, capture, feedback and the web UI.

    /v1/models, /v1/chat/completions, /v1/completions (stream: true -> server-sent events),
    /v1/embeddings (packaged MiniLM), /v1/feedback, /health, /metrics, /docs + /openapi.json, /ui/

Every API route but /health (the UI's data calls and /metrics included) needs ``Authorization:
Bearer <key>``; the UI's static files and the API docs are open (they hold no data). The key is
checked by :class:`Gate`, an ASGI middleware in front of everything, *before* the body is read or
validated, so a request without a key learns nothing but 401. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with its status codes (400 bad input, 401
no/bad key, 403 scope, 404 unknown model or id, 405 method, 413 too large, 429 rate or
concurrency limit, 500 a bug, 504 request time limit); every code a route can return is in its
OpenAPI ``responses``. Each generation is recorded (prompt, output, candidate, params, latency,
tokens, key) by :mod:`odyssey.deploy.capture` before its response ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from odyssey.deploy.backends import Backend, Delta, GenParams
from odyssey.spec import DeploySpec

STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = STATIC / "docs"  # Swagger UI 5 (swagger-ui-dist, Apache-2.0: LICENSE and NOTICE beside it)
log = logging.getLogger("odyssey.deploy")


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


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


class _Out(BaseModel):
    """Response shapes, for the OpenAPI document (Schemathesis checks every answer against them);
    the routes build plain dicts, and fields beyond these are allowed, as in OpenAI's API."""

    model_config = ConfigDict(extra="allow")


class HealthOut(_Out):
    status: Literal["ok"]
    models: list[str]
    uptime_s: float


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class UsageOut(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: str


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletionOut(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageOut


class TextChoice(_Out):
    index: int
    text: str
    finish_reason: str | None


class TextCompletionOut(_Out):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: UsageOut


class EmbeddingOut(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Out):
    object: Literal["list"]
    model: str
    data: list[EmbeddingOut]
    usage: EmbeddingUsage


class FeedbackOut(_Out):
    id: int
    object: Literal["feedback"]
    kind: Literal["thumbs", "rating", "correction", "preference"]
    request_id: str | None


class PairOut(_Out):
    pair: dict | None
    pending: int


class BoardOut(_Out):
    plots: list[dict]
    served: list[str]


def _ok(model, description: str = "the answer", stream: bool = False) -> dict:
    out = {"model": model, "description": description}
    if stream:
        out["description"] += "; with `stream: true`, server-sent events of chunks"
        out["content"] = {"text/event-stream": {"schema": {  # one event: `data: <JSON chunk>` (or [DONE])
            "type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
            "required": ["data"]}}}
    return {200: out}


def _errors(*codes: int) -> dict:
    words = {400: "invalid request", 401: "missing, unknown or revoked API key", 403: "the key lacks the scope",
             404: "unknown model, id or path", 413: "request body over deploy.max_request_bytes",
             429: "the key's rate or concurrency limit", 500: "internal error (a bug)",
             504: "the request ran past its time limit"}
    return {c: {"model": ErrorResponse, "description": words[c]} for c in codes}


PRIVATE_INFO = ("upstream", "pid", "gguf", "model", "path", "log")  # where a backend runs: admin keys only
OPEN_ERRORS = _errors(400, 413, 500)
KEYED_ERRORS = _errors(400, 401, 403, 413, 429, 500)
GEN_ERRORS = _errors(400, 401, 403, 404, 413, 429, 500, 504)


def lone_surrogate(value, path: str = "") -> str | None:
    """The path of the first string holding a lone UTF-16 surrogate (not Unicode text), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = lone_surrogate(k, path) or lone_surrogate(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = lone_surrogate(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


# ---- request bodies (OpenAI's wire format; unknown fields are ignored as OpenAI's server does) --


class _Body(BaseModel):
    # strict: a JSON value of the wrong type is refused, not coerced ("1" is no integer), as the
    # OpenAPI document says
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Body):
    type: Literal["text"] = Field(description="only text parts are supported")
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
    n: int = Field(1, ge=1, json_schema_extra={"maximum": 1})  # one choice per request (message: _one_choice)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, json_schema_extra={"maxItems": 4})
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
    prompt: str | list[str] = Field(..., min_length=1)
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
    input: str | list[str] = Field(..., min_length=1, json_schema_extra={"maxItems": 256})
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

    _max_token_chars: int | None = None

    def turns(self) -> str:
        """'single': a task-mode candidate answers each user turn alone, through its prompt, as it
        was evaluated (earlier turns are not sent); 'multi': the chat template sees every turn."""
        return "single" if self.mode == "task" and self.prompt is not None else "multi"

    def max_token_chars(self) -> int:
        """The longest token of the vocabulary in characters: a prompt of more than this many
        characters per allowed token is over the limit whatever it holds (a cheap check before
        tokenizing). Vocabulary strings are byte-level or one char per piece, never shorter
        than the text they stand for."""
        if self._max_token_chars is None:
            vocab = self.backend.tokenizer.get_vocab()
            self._max_token_chars = max((len(t) for t in vocab), default=64) or 64
        return self._max_token_chars

    def render_chat(self, messages: list[Message]) -> str:
        from odyssey.data import Example
        from odyssey.prompts import DemoSelector, PromptConfig, has_chat_template, render

        tok = self.backend.tokenizer
        turns = [(m.role if m.role != "developer" else "system", m.text()) for m in messages]
        system = [t for r, t in turns if r == "system"]
        others = [(r, t) for r, t in turns if r != "system"]
        if self.turns() == "single" and others and others[-1][0] == "user":
            # Every user turn of a task-mode chat goes through the candidate's prompt, alone: the
            # candidate was evaluated single-turn (a classifier or summarizer), so the earlier
            # turns are not sent (issue 25: the second message of a playground chat went bare).
            cfg = self.prompt
            if system:
                cfg = PromptConfig.from_dict({**cfg.as_dict(), "system": "\n".join(system)})
            if self._selector is None:
                self._selector = DemoSelector(self.pool, cfg.selection, min(cfg.shots, len(self.pool)), cfg.seed)
            example = Example("request", others[-1][1])
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


JSON_ROUTES_TYPES = (b"", b"application/x-www-form-urlencoded", b"text/plain")


class Gate:
    """The ASGI middleware in front of the whole app, in this order:

    1. every response is counted by route, method and status code (``/metrics``), and an
       exception that escaped the app becomes a JSON 500 in OpenAI's shape (logged, with its
       traceback in the log only), so the keep-alive connection survives;
    2. a route that needs a key (``scopes``: route path -> scope) is authenticated before its
       body is read, so a request without a key gets 401, never a detailed 400;
    3. the body is read up to ``limit`` bytes, declared (Content-Length) or streamed (chunked):
       over it, 413;
    4. a JSON body sent without ``Content-Type: application/json`` (``curl -d`` sends
       ``application/x-www-form-urlencoded``) is taken as JSON, and a JSON body holding a lone
       UTF-16 surrogate (``"\\ud800"``, which is not Unicode text and cannot be tokenized or
       stored) is refused with 400 naming the field.
    """

    def __init__(self, app, gateway: Gateway, scopes: dict[str, str], limit: int, router=None):
        self.app, self.gw, self.scopes, self.limit, self.router = app, gateway, scopes, limit, router

    def route_of(self, scope) -> tuple[str, str | None]:
        """(route label for metrics, the scope it needs or None when it is open)."""
        partial = None
        for route in self.router.routes if self.router is not None else ():
            match, _ = route.matches(scope)
            if match == Match.FULL:
                path = getattr(route, "path", "") or "/"
                return path, self.scopes.get(path)
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial or "unmatched", None  # a 405 or 404: nothing to authenticate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, needs = self.route_of(scope)
        status: dict = {}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, sending, needs)
        except Exception:  # a bug: logged with its traceback, the client gets JSON without one
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if "code" not in status:
                await error_response(APIError(500, "internal server error (see the server log)", "server_error",
                                              "internal_error"))(scope, receive, sending)
        finally:
            self.gw.http[(route, scope.get("method", ""), status.get("code", 500))] += 1

    async def _handle(self, scope, receive, send, needs: str | None):
        headers = dict(scope.get("headers") or [])
        try:
            if needs is not None:
                scope["odyssey.key"] = self.gw.authenticate(headers, needs)
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise self.too_large()
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client left before sending it all
                    return
                body += message.get("body", b"")
                if len(body) > self.limit:
                    raise self.too_large()
                if not message.get("more_body"):
                    break
            if needs is not None and scope.get("method") == "POST" and body:
                ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
                if ctype in JSON_ROUTES_TYPES:  # curl -d: the text is JSON all the same
                    scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                        (b"content-type", b"application/json")]
                    ctype = b"application/json"
                if ctype == b"application/json" or ctype.endswith(b"+json"):
                    self.check_text(bytes(body))
        except APIError as exc:
            return await error_response(exc)(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # then wait for the disconnect, as the app expects

        await self.app(scope, replay, send)

    def too_large(self) -> APIError:
        return APIError(413, f"request body is larger than the limit of {self.limit} bytes "
                             "(deploy.max_request_bytes)", code="request_too_large")

    @staticmethod
    def check_text(body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return  # not JSON: the route's validation says so
        where = lone_surrogate(data)
        if where:
            raise APIError(400, f"'{where}' holds a lone UTF-16 surrogate (such as \\ud800): text must be valid "
                                "Unicode", code="invalid_unicode", param=where)


# ---- the app -----------------------------------------------------------------------------------


class Gateway:
    def __init__(self, project, served: list[Served], settings: DeploySpec, capture=None):
        self.project, self.settings, self.capture = project, settings, capture
        self.models = {s.name: s for s in served}
        self.default = served[0].name
        self.limiter = Limiter()
        self.counters: dict[str, float] = defaultdict(float)
        self.http: Counter = Counter()  # (route, method, status) -> responses, filled by Gate
        self.started = time.time()
        # deploy.request_timeout_s when the spec has it; 600 s otherwise
        self.request_timeout = float(getattr(settings, "request_timeout_s", None) or 600.0)

    # -- auth and limits --
    def authenticate(self, headers: dict[bytes, bytes], scope: str) -> dict:
        """The key's row, or an APIError (401 no/bad/revoked key, 403 scope, 429 rate limit)."""
        from odyssey.deploy.keys import verify

        header = headers.get(b"authorization", b"").decode("latin-1")
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

    @staticmethod
    def key(request: Request) -> dict:
        """The key Gate authenticated for this request."""
        return request.scope["odyssey.key"]

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

    async def check_input(self, served: Served, texts: list[str], param: str):
        """The request's own text against deploy.max_prompt_tokens, before any rendering (task
        mode truncates the input to the context, so the rendered prompt alone would not show a
        300k-character prompt): first a characters bound, then the exact token count."""
        limit = self.settings.max_prompt_tokens
        chars = sum(len(t) for t in texts)
        if chars > limit * served.max_token_chars():
            raise APIError(400, f"the prompt has {chars} characters, more than {limit} tokens can hold (this server's "
                                f"max_prompt_tokens is {limit})", code="context_length_exceeded", param=param)
        tok = served.backend.tokenizer
        n = await asyncio.to_thread(lambda: sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts))
        if n > limit:
            raise APIError(400, f"the prompt has {n} tokens; this server accepts at most {limit} (max_prompt_tokens)",
                           code="context_length_exceeded", param=param)

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


class SafeStatic(StaticFiles):
    """Starlette's StaticFiles, which already resolves symlinks (``follow_symlink=False``) and
    refuses any resolved path outside its folder, plus: a path with a NUL byte, a backslash or a
    '..' segment (after URL decoding) is a 404 before the file system is touched."""

    def lookup_path(self, path: str):
        parts = path.replace("\\", "/").split("/")
        if "\x00" in path or "\\" in path or ".." in parts:
            return "", None
        return super().lookup_path(path)


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

    app = FastAPI(title="Odyssey", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"OpenAI-compatible API for the project {project.spec.name!r}: "
                              f"{', '.join(s.name for s in served)}. Send `Authorization: Bearer <key>` "
                              "(`odyssey keys create`) on every route but /health.")
    app.state.gateway = gw
    # Route path -> the scope its key needs. Every API route is listed (create_app checks), so
    # a new route cannot be left open by accident; /health, the docs and static files are open.
    scopes: dict[str, str] = {
        "/metrics": "inference", "/v1/models": "inference", "/v1/chat/completions": "inference",
        "/v1/completions": "inference", "/v1/embeddings": "inference", "/v1/feedback": "feedback",
        "/ui/api/board": "inference", "/ui/api/artifacts/{artifact_id}": "inference",
        "/ui/api/pairs/next": "feedback"}
    open_routes = {"/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
    if settings.cors_origins:  # CORS is off unless origins are listed in deploy.cors_origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Gate, gateway=gw, scopes=scopes, limit=settings.max_request_bytes, router=app.router)

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
            msg = "the request body must be a JSON object"
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
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    # -- API docs, served from local files (no CDN: /docs works offline) --
    @app.get("/docs", include_in_schema=False)
    async def docs():
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="Odyssey API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png",
                                   oauth2_redirect_url=None,
                                   swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io

    def openapi_document() -> dict:
        """FastAPI's document plus the bearer-key scheme on every keyed route, without the 422
        FastAPI documents by default (validation errors are 400 here, as OpenAI's are)."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
            "type": "http", "scheme": "bearer", "description": "an Odyssey key: `odyssey keys create --name NAME`"}
        for path, ops in doc.get("paths", {}).items():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
                if path in scopes:
                    op["security"] = [{"apiKey": []}]
                    op["description"] = (op.get("description") or "") + f"\n\nNeeds a key with the '{scopes[path]}' scope."
        # links: an answer's id is what feedback refers to (Schemathesis's stateful phase follows them)
        feedback_op = doc["paths"]["/v1/feedback"]["post"]["operationId"]
        for path in ("/v1/chat/completions", "/v1/completions"):
            doc["paths"][path]["post"]["responses"]["200"]["links"] = {
                "ThumbsUp": {"operationId": feedback_op, "description": "thumbs up on this answer",
                             "requestBody": {"request_id": "$response.body#/id", "thumbs": "up"}},
                "Correction": {"operationId": feedback_op, "description": "a better answer for this one",
                               "requestBody": {"request_id": "$response.body#/id", "correction": "a better answer"}}}
        schemas = doc["components"].get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for name in ("ChatBody", "CompletionBody"):  # this server's own limit, not a constant
            if name in schemas:
                schemas[name]["properties"]["max_tokens"]["anyOf"][0]["maximum"] = settings.max_tokens
        app.openapi_schema = doc
        return doc

    app.openapi = openapi_document

    # -- health, metrics, models --
    @app.get("/health", tags=["ops"], responses={**OPEN_ERRORS, **_ok(HealthOut)})
    async def health():
        return {"status": "ok", "models": list(gw.models), "uptime_s": round(time.time() - gw.started, 1)}

    @app.get("/metrics", tags=["ops"], responses={**KEYED_ERRORS, 200: {
        "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus text format (written by hand: a few counters do not need prometheus_client)."""
        lines = ["# HELP odyssey_uptime_seconds Seconds since the server started.",
                 "# TYPE odyssey_uptime_seconds gauge", f"odyssey_uptime_seconds {time.time() - gw.started:.1f}",
                 "# HELP odyssey_http_requests_total HTTP responses by route, method, status code and class.",
                 "# TYPE odyssey_http_requests_total counter"]
        for (route, method, code), value in sorted(gw.http.items()):
            route = route.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'odyssey_http_requests_total{{route="{route}",method="{method}",code="{code}",'
                         f'class="{code // 100}xx"}} {value}')
        for name, value in sorted(gw.counters.items()):
            lines += [f"# HELP odyssey_{name}_total Odyssey counter {name.replace('_', ' ')}.",
                      f"# TYPE odyssey_{name}_total counter", f"odyssey_{name}_total {value:g}"]
        lines += ["# HELP odyssey_inflight Requests being answered now.", "# TYPE odyssey_inflight gauge",
                  f"odyssey_inflight {sum(gw.limiter.inflight.values())}"]
        if gw.capture is not None:
            lines += ["# HELP odyssey_capture_written_total Records committed to the store.",
                      "# TYPE odyssey_capture_written_total counter",
                      f"odyssey_capture_written_total {gw.capture.written}",
                      "# HELP odyssey_capture_pending Records waiting to be committed.",
                      "# TYPE odyssey_capture_pending gauge", f"odyssey_capture_pending {gw.capture.pending}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["openai"], responses={**KEYED_ERRORS, **_ok(ModelList)})
    async def list_models(request: Request):
        """The served candidates. Where a backend runs (upstream address, pid, model files) is
        shown to admin keys only."""
        admin = "admin" in gw.key(request)["scopes"]
        data = []
        for s in gw.models.values():
            info = s.backend.info()
            entry = {"id": s.name, "object": "model", "created": int(gw.started), "owned_by": project.spec.name,
                     "prompt_mode": s.mode, "turns": s.turns()}
            if admin:
                entry.update(model_ref=s.model_ref, **info)
            else:
                entry.update({k: v for k, v in info.items() if k not in PRIVATE_INFO})
            data.append(entry)
        return {"object": "list", "data": data}

    # -- generation --
    async def run_generation(request: Request, body: _GenBody, endpoint: str, served: Served, key: dict,
                             prompt_record: Any, rendered: str, params: GenParams, note: str | None = None):
        ids = await asyncio.to_thread(served.encode, rendered)
        gw.check_prompt(served, ids, params)
        gw.acquire(key)  # released when the answer is complete (or the stream ends)
        request_id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + secrets.token_hex(12)
        created = int(time.time())
        t0 = time.perf_counter()
        record = {"request_id": request_id, "key_id": key["id"], "candidate": served.name, "endpoint": endpoint,
                  "params": {k: v for k, v in body.model_dump().items() if k not in ("messages", "prompt")},
                  "prompt": prompt_record, "rendered_prompt": rendered}
        headers = {"x-request-id": request_id, **({"x-odyssey-prompt": note} if note else {})}

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

        timeout = gw.request_timeout
        if not body.stream:
            text, final = "", None

            async def whole():
                nonlocal text, final
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

            try:
                await asyncio.wait_for(whole(), timeout)
            except TimeoutError:
                await gw.record(finish_record(text, None, 504, f"over the request time limit of {timeout:g} s"))
                raise APIError(504, f"the answer took longer than this server's limit of {timeout:g} s",
                               "server_error", "timeout") from None
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
                    if time.perf_counter() - t0 > timeout:
                        recorded = True
                        await gw.record(finish_record(text, None, 504, f"over the request time limit of {timeout:g} s"))
                        yield event(error_body(f"the answer took longer than this server's limit of {timeout:g} s",
                                               "server_error", "timeout"))
                        return
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

    @app.post("/v1/chat/completions", tags=["openai"], responses={**GEN_ERRORS, **_ok(ChatCompletionOut, stream=True)})
    async def chat_completions(body: ChatBody, request: Request):
        key = gw.key(request)
        served = gw.model(body.model)
        params = gw.params(body, body.max_completion_tokens or body.max_tokens)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        sent = messages  # what reaches the model: in single-turn task mode, the system text and the last user turn
        if served.turns() == "single" and messages[-1]["role"] == "user":
            sent = [m for m in messages if m["role"] in ("system", "developer")] + [messages[-1]]
        await gw.check_input(served, [m["content"] for m in sent], "messages")
        try:
            rendered = await asyncio.to_thread(served.render_chat, body.messages)
        except Exception as exc:
            import jinja2

            if not isinstance(exc, jinja2.TemplateError):
                raise
            # the model's own chat template refused these messages (e.g. "System role not supported"),
            # or the sandbox stopped it: the client's input, so a 400 naming the reason
            raise APIError(400, f"the model's chat template refused these messages: {str(exc)[:300]}",
                           code="chat_template_error", param="messages") from None
        note = None
        if served.turns() == "single" and messages[-1]["role"] == "user":
            users = sum(m["role"] == "user" for m in messages)
            note = "task: the last user turn alone, through the candidate's prompt" + (
                f" ({users - 1} earlier turn(s) not sent: this candidate is single-turn)" if users > 1 else "")
        return await run_generation(request, body, "chat", served, key, messages, rendered, params, note)

    @app.post("/v1/completions", tags=["openai"], responses={**GEN_ERRORS, **_ok(TextCompletionOut, stream=True)})
    async def completions(body: CompletionBody, request: Request):
        key = gw.key(request)
        served = gw.model(body.model)
        params = gw.params(body, body.max_tokens)
        await gw.check_input(served, [body.prompt], "prompt")
        return await run_generation(request, body, "completion", served, key, body.prompt, body.prompt, params)

    @app.post("/v1/embeddings", tags=["openai"], responses={**GEN_ERRORS, **_ok(EmbeddingList)})
    async def embeddings(body: EmbeddingBody, request: Request):
        from odyssey.models.embeddings import DEFAULT_EMBEDDER, embed

        key = gw.key(request)
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
    @app.post("/v1/feedback", tags=["feedback"], responses={**_errors(400, 401, 403, 404, 413, 429, 500),
                                                             **_ok(FeedbackOut, "the feedback item, stored")})
    async def feedback(body: FeedbackBody, request: Request):
        from odyssey.store import deploy as sd

        key = gw.key(request)
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

    @app.get("/ui/api/board", tags=["ui"], responses={**KEYED_ERRORS, **_ok(BoardOut, "the board (candidates, gates, plots)")})
    async def board(request: Request):
        from odyssey.evaluate.board import build_board

        data = build_board(project).as_dict()  # a few indexed queries, on the loop's thread like all store reads
        data["plots"] = [
            {"id": a["id"], "run_id": a["run_id"], "url": f"/ui/api/artifacts/{a['id']}"}
            for a in project.store.db.execute(
                "SELECT a.id, a.run_id FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE r.project_id = ?"
                " AND a.kind = 'report-plot' ORDER BY a.id DESC LIMIT 4", (project.store.project_id,))]
        data["served"] = list(gw.models)
        return data

    @app.get("/ui/api/artifacts/{artifact_id}", tags=["ui"], response_model=None,
             responses={**_errors(400, 401, 403, 404, 413, 429, 500),
                        200: {"content": {"image/png": {}}, "description": "the plot (PNG)"}})
    async def artifact(request: Request, artifact_id: int = PathParam(..., ge=1, le=2**62)):
        """A report plot by id (the key is checked by Gate, like every data call of the UI).
        Only files the store recorded as report plots are served: no path comes from the request."""
        row = project.store.db.execute(
            "SELECT a.path FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE a.id = ? AND r.project_id = ?"
            " AND a.kind = 'report-plot'", (artifact_id, project.store.project_id)).fetchone()
        if row is None or not Path(row["path"]).exists():
            raise APIError(404, f"no plot with id {artifact_id}", code="not_found")
        return FileResponse(row["path"], media_type="image/png")

    @app.get("/ui/api/pairs/next", tags=["ui"], responses={**KEYED_ERRORS, **_ok(PairOut, "the next pending pair")})
    async def next_pair(request: Request, after: int = Query(0, ge=0, le=2**62)):
        from odyssey.store import deploy as sd

        pair = sd.next_pair(project.store, after)
        return {"pair": pair, "pending": sd.pending_pairs(project.store)}

    app.mount("/docs/assets", SafeStatic(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/ui", SafeStatic(directory=STATIC, html=True), name="ui")
    unlisted = [r.path for r in app.routes if hasattr(r, "methods") and r.path not in scopes
                and r.path not in open_routes]
    assert not unlisted, f"routes with no scope (add them to `scopes` or `open_routes`): {unlisted}"
    return app
