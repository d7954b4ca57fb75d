"""The wire format of the gateway: OpenAI's request bodies, the response shapes the OpenAPI
document declares, and OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``.

Request bodies are strict (a JSON value of the wrong type is refused, not coerced) and ignore
unknown fields, as OpenAI's server does. Response models document the answers for the OpenAPI
document (Schemathesis checks every answer against them); the routes build plain dicts.
"""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

# ---- errors -----------------------------------------------------------------------------------


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status, headers=exc.headers
    )


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


def ok_doc(model, description: str = "the answer", stream: bool = False) -> dict:
    out = {"model": model, "description": description}
    if stream:
        out["description"] += "; with `stream: true`, server-sent events of chunks"
        out["content"] = {
            "text/event-stream": {
                "schema": {  # one event: `data: <JSON chunk>` (or [DONE])
                    "type": "object",
                    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                    "required": ["data"],
                }
            }
        }
    return {200: out}


def error_docs(*codes: int) -> dict:
    words = {
        400: "invalid request",
        401: "missing, unknown or revoked API key",
        403: "the key lacks the scope",
        404: "unknown model, id or path",
        413: "request body over deploy.max_request_bytes",
        429: "the key's rate or concurrency limit",
        500: "internal error (a bug)",
        504: "the request ran past its time limit",
    }
    return {c: {"model": ErrorResponse, "description": words[c]} for c in codes}


OPEN_ERRORS = error_docs(400, 413, 500)
KEYED_ERRORS = error_docs(400, 401, 403, 413, 429, 500)
GEN_ERRORS = error_docs(400, 401, 403, 404, 413, 429, 500, 504)


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


class GenBody(_Body):
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


class ChatBody(GenBody):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(GenBody):
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
