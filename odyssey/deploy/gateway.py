"""The generation gateway: the served candidates, API keys and limits, capture, and one answer
in flight (:func:`run_generation`: a JSON body, or server-sent events).

:class:`Gate` is the ASGI middleware in front of the whole app (keys before bodies, body size,
lone surrogates, a JSON 500 for a bug); :class:`Gateway` holds what the routes share (served
models, the limiter, counters, the capture writer); :class:`Generation` is one request's answer,
recorded (prompt, output, candidate, params, latency, tokens, key) before its response ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.routing import Match

from odyssey.deploy.backends import Backend, Delta, GenParams
from odyssey.deploy.wire import APIError, GenBody, Message, error_body, error_response, lone_surrogate

if TYPE_CHECKING:
    from fastapi import Request

    from odyssey.spec import DeploySpec

log = logging.getLogger("odyssey.deploy")


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
    aliases: tuple = ()  # other names a request may give it: 'best' when it was served as the best
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
            return tok.apply_chat_template(
                [{"role": r, "content": t} for r, t in turns], tokenize=False, add_generation_prompt=True
            )
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

    def __init__(self, app, gateway: Gateway, scopes: dict[str, str], limit: int, routes=()):
        # ``routes``: every route of the app, flat and in routing order (create_app lists them: an
        # included router may be one lazy entry of ``app.routes``, as in FastAPI 0.165)
        self.app, self.gw, self.scopes, self.limit, self.routes = app, gateway, scopes, limit, list(routes)

    def route_of(self, scope) -> tuple[str, str | None]:
        """(route label for metrics, the scope it needs or None when it is open)."""
        partial = None
        for route in self.routes:
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
                await error_response(
                    APIError(500, "internal server error (see the server log)", "server_error", "internal_error")
                )(scope, receive, sending)
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
                        (b"content-type", b"application/json")
                    ]
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
        return APIError(
            413,
            f"request body is larger than the limit of {self.limit} bytes (deploy.max_request_bytes)",
            code="request_too_large",
        )

    @staticmethod
    def check_text(body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return  # not JSON: the route's validation says so
        where = lone_surrogate(data)
        if where:
            raise APIError(
                400,
                f"'{where}' holds a lone UTF-16 surrogate (such as \\ud800): text must be valid Unicode",
                code="invalid_unicode",
                param=where,
            )


# ---- the gateway -----------------------------------------------------------------------------------


class Gateway:
    def __init__(self, project, served: list[Served], settings: DeploySpec, capture=None):
        self.project, self.settings, self.capture = project, settings, capture
        self.models = {s.name: s for s in served}
        self.default = served[0].name
        self.limiter = Limiter()
        self.counters: dict[str, float] = defaultdict(float)
        self.http: Counter = Counter()  # (route, method, status) -> responses, filled by Gate
        self.started = time.time()
        self.request_timeout = float(settings.request_timeout_s)  # read per request (tests lower it)

    # -- auth and limits --
    def authenticate(self, headers: dict[bytes, bytes], scope: str) -> dict:
        """The key's row, or an APIError (401 no/bad/revoked key, 403 scope, 429 rate limit)."""
        from odyssey.deploy.keys import verify

        header = headers.get(b"authorization", b"").decode("latin-1")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not key:
            raise APIError(
                401,
                "missing API key: send 'Authorization: Bearer <key>' (create one with "
                "`odyssey keys create --name NAME`)",
                "invalid_request_error",
                "invalid_api_key",
            )
        row = verify(self.project.store, key)
        if row is None:
            raise APIError(401, "invalid or revoked API key", "invalid_request_error", "invalid_api_key")
        if scope not in row["scopes"] and "admin" not in row["scopes"]:
            raise APIError(
                403,
                f"this key lacks the '{scope}' scope (it has: {', '.join(row['scopes'])})",
                "permission_error",
                "insufficient_scope",
            )
        rpm = row["rate_limit_rpm"] or self.settings.rate_limit_rpm
        wait = self.limiter.take(row["id"], rpm)
        if wait:
            self.counters["rate_limited"] += 1
            raise APIError(
                429,
                f"rate limit of {rpm} requests per minute reached for this key; retry in {wait:.1f} s",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return row

    @staticmethod
    def of(request: Request) -> Gateway:
        """The gateway of the app that received ``request`` (create_app puts it in ``app.state``)."""
        return request.app.state.gateway

    @staticmethod
    def key(request: Request) -> dict:
        """The key Gate authenticated for this request."""
        return request.scope["odyssey.key"]

    def acquire(self, key: dict):
        limit = key["max_concurrency"] or self.settings.max_concurrency
        if self.limiter.inflight[key["id"]] >= limit:
            self.counters["concurrency_limited"] += 1
            raise APIError(
                429,
                f"this key already has {limit} requests in flight (its concurrency limit)",
                "rate_limit_error",
                "concurrency_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        self.limiter.inflight[key["id"]] += 1

    def release(self, key: dict):
        self.limiter.inflight[key["id"]] -= 1

    def model(self, name: str | None) -> Served:
        if not name or name in self.models:
            return self.models[name or self.default]
        for served in self.models.values():  # also accept the model reference itself, or 'best'
            if served.model_ref == name or name in served.aliases:
                return served
        raise APIError(
            404,
            f"the model {name!r} is not served here; served: {', '.join(self.models)}",
            "invalid_request_error",
            "model_not_found",
            "model",
        )

    def params(self, body: GenBody, max_tokens: int | None) -> GenParams:
        limit = self.settings.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise APIError(
                400,
                f"max_tokens={max_tokens} is over this server's limit of {limit}",
                code="max_tokens_too_large",
                param="max_tokens",
            )
        return GenParams(
            max_tokens=max_tokens or min(self.settings.default_max_tokens, limit),
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=list(body.stop or []),
        )

    async def check_input(self, served: Served, texts: list[str], param: str):
        """The request's own text against deploy.max_prompt_tokens, before any rendering (task
        mode truncates the input to the context, so the rendered prompt alone would not show a
        300k-character prompt): first a characters bound, then the exact token count."""
        limit = self.settings.max_prompt_tokens
        chars = sum(len(t) for t in texts)
        if chars > limit * served.max_token_chars():
            raise APIError(
                400,
                f"the prompt has {chars} characters, more than {limit} tokens can hold (this server's "
                f"max_prompt_tokens is {limit})",
                code="context_length_exceeded",
                param=param,
            )
        tok = served.backend.tokenizer
        n = await asyncio.to_thread(lambda: sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts))
        if n > limit:
            raise APIError(
                400,
                f"the prompt has {n} tokens; this server accepts at most {limit} (max_prompt_tokens)",
                code="context_length_exceeded",
                param=param,
            )

    def check_prompt(self, served: Served, ids: list[int], params: GenParams):
        if not ids:
            raise APIError(400, "the prompt is empty", code="empty_prompt", param="prompt")
        limit = min(self.settings.max_prompt_tokens, max(served.backend.context_length - params.max_tokens, 1))
        if len(ids) > limit:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; this server accepts at most {limit} "
                f"(max_prompt_tokens {self.settings.max_prompt_tokens}, context "
                f"{served.backend.context_length} minus max_tokens {params.max_tokens})",
                code="context_length_exceeded",
                param="messages",
            )

    async def record(self, row: dict):
        self.counters[f"requests_{row['endpoint']}_{row['status']}"] += 1
        self.counters["prompt_tokens"] += row.get("prompt_tokens") or 0
        self.counters["completion_tokens"] += row.get("completion_tokens") or 0
        if self.capture is not None:
            await self.capture.write(request=row)


async def stream_deltas(served: Served, ids: list[int], params: GenParams):
    """The backend's deltas with stop strings applied (the gateway owns stop handling for every backend)."""
    held = ""
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


def _failure(final: Delta | None) -> str | None:
    """Why a generation failed (the backend's ``error:`` finish reason, or no result at all); None if it did not."""
    if final is None:
        return "generation ended without a result"
    return final.finish_reason[6:] if final.finish_reason.startswith("error:") else None


class Generation:
    """One answer in flight: the record kept of it, and its two shapes (:meth:`whole`, one JSON
    body; :meth:`events`, server-sent events). Either releases the key's slot when it ends."""

    def __init__(
        self,
        gw: Gateway,
        body: GenBody,
        endpoint: str,
        served: Served,
        key: dict,
        ids: list[int],
        params: GenParams,
        prompt_record: Any,
        rendered: str,
    ):
        self.gw, self.body, self.endpoint, self.served, self.key = gw, body, endpoint, served, key
        self.ids, self.params, self.rendered = ids, params, rendered
        self.request_id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.t0 = time.perf_counter()
        self.timeout = gw.request_timeout
        self.record = {
            "request_id": self.request_id,
            "key_id": key["id"],
            "candidate": served.name,
            "endpoint": endpoint,
            "params": {k: v for k, v in body.model_dump().items() if k not in ("messages", "prompt")},
            "prompt": prompt_record,
            "rendered_prompt": rendered,
        }
        self.text, self.final = "", None  # what the non-streamed answer has so far (kept on a timeout)

    def finish_record(self, text: str, final: Delta | None, status: int, error: str | None = None) -> dict:
        return {
            **self.record,
            "output": text,
            "status": status,
            "error": error,
            "finish_reason": final.finish_reason if final else None,
            "prompt_tokens": (final.prompt_tokens if final and final.prompt_tokens else len(self.ids)),
            "completion_tokens": final.completion_tokens if final else None,
            "latency_ms": (time.perf_counter() - self.t0) * 1000,
        }

    def counted(self, final: Delta, text: str) -> Delta:
        if final.completion_tokens is None:
            tokenizer = self.served.backend.tokenizer
            final.completion_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return final

    def usage(self, final: Delta) -> dict:
        prompt_tokens = final.prompt_tokens or len(self.ids)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": final.completion_tokens,
            "total_tokens": prompt_tokens + final.completion_tokens,
        }

    def timeout_record(self, text: str) -> dict:
        return self.finish_record(text, None, 504, f"over the request time limit of {self.timeout:g} s")

    def timeout_message(self) -> str:
        return f"the answer took longer than this server's limit of {self.timeout:g} s"

    async def _collect(self):
        complete = getattr(self.served.backend, "complete", None)
        if complete is not None:
            final = self.final = await complete(self.ids, self.params)
            text, final.text = final.text, ""
            stops = self.params.stop
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:  # the upstream stops on these too; this keeps every backend alike
                text, final.finish_reason = text[:cut], "stop"
            self.text = text
            return
        async for delta in stream_deltas(self.served, self.ids, self.params):
            self.text += delta.text
            if delta.finish_reason:
                self.final = delta

    async def whole(self) -> dict:
        """The answer as one chat.completion / text_completion object."""
        try:
            await asyncio.wait_for(self._collect(), self.timeout)
        except TimeoutError:
            await self.gw.record(self.timeout_record(self.text))
            raise APIError(504, self.timeout_message(), "server_error", "timeout") from None
        finally:
            self.gw.release(self.key)
        text, final = self.text, self.final
        failure = _failure(final)
        if failure is not None:
            await self.gw.record(self.finish_record(text, final, 500, failure))
            raise APIError(500, f"generation failed: {failure}", "server_error", "backend_error")
        final = self.counted(final, text)
        await self.gw.record(self.finish_record(text, final, 200))
        if self.endpoint == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": final.finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": (self.rendered + text) if getattr(self.body, "echo", False) else text,
                "logprobs": None,
                "finish_reason": final.finish_reason,
            }
            obj = "text_completion"
        return {
            "id": self.request_id,
            "object": obj,
            "created": self.created,
            "model": self.served.name,
            "choices": [choice],
            "usage": self.usage(final),
            "system_fingerprint": None,
        }

    @staticmethod
    def event(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def chunk(self, delta: dict | str, finish: str | None = None) -> str:
        """One chunk event: a chat delta ({"content": ...}) or a completion's text."""
        if self.endpoint == "chat":
            return self.chunk_event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        return self.chunk_event([{"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}])

    def chunk_event(self, choices: list[dict], **more) -> str:
        obj = "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"
        return self.event(
            {
                "id": self.request_id,
                "object": obj,
                "created": self.created,
                "model": self.served.name,
                "choices": choices,
                **more,
            }
        )

    async def events(self):
        """Server-sent events of chunks; an error after the first event is an error event (the
        status line is sent). A client that leaves mid-stream is recorded with status 499."""
        chat = self.endpoint == "chat"
        text, final, recorded = "", None, False
        try:
            if chat:
                yield self.chunk({"role": "assistant", "content": ""})
            async for delta in stream_deltas(self.served, self.ids, self.params):
                if delta.finish_reason:
                    final = delta
                    break
                text += delta.text
                yield self.chunk({"content": delta.text} if chat else delta.text)
                if time.perf_counter() - self.t0 > self.timeout:
                    recorded = True
                    await self.gw.record(self.timeout_record(text))
                    yield self.event(error_body(self.timeout_message(), "server_error", "timeout"))
                    return
            failure = _failure(final)
            if failure is not None:
                recorded = True
                await self.gw.record(self.finish_record(text, final, 500, failure))
                yield self.event(error_body(f"generation failed: {failure}", "server_error", "backend_error"))
                return
            final = self.counted(final, text)
            recorded = True
            await self.gw.record(self.finish_record(text, final, 200))  # committed before the last event is sent
            yield self.chunk({} if chat else "", final.finish_reason)
            if self.body.stream_options and self.body.stream_options.include_usage:
                yield self.chunk_event([], usage=self.usage(final))
            yield "data: [DONE]\n\n"
        finally:
            self.gw.release(self.key)
            if not recorded and self.gw.capture is not None:  # the client went away mid-stream: keep what it saw
                self.gw.capture.submit(request=self.finish_record(text, final, 499, "client disconnected"))


async def run_generation(
    gw: Gateway,
    body: GenBody,
    endpoint: str,
    served: Served,
    key: dict,
    prompt_record: Any,
    rendered: str,
    params: GenParams,
    note: str | None = None,
):
    """Tokenize, check and answer one generation request (``endpoint``: 'chat' or 'completion')."""
    ids = await asyncio.to_thread(served.encode, rendered)
    gw.check_prompt(served, ids, params)
    gw.acquire(key)  # released when the answer is complete (or the stream ends)
    generation = Generation(gw, body, endpoint, served, key, ids, params, prompt_record, rendered)
    headers = {"x-request-id": generation.request_id, **({"x-odyssey-prompt": note} if note else {})}
    if not body.stream:
        return JSONResponse(await generation.whole(), headers=headers)
    return StreamingResponse(
        generation.events(),
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
