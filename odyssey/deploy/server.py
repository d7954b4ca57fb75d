"""The gateway app: an OpenAI-compatible API (FastAPI) with keys, limits, capture, feedback and the web UI.

    /v1/models, /v1/chat/completions, /v1/completions (stream: true -> server-sent events),
    /v1/embeddings (packaged MiniLM), /v1/feedback, /health, /metrics, /docs + /openapi.json, /ui/

Every API route but /health (the UI's data calls and /metrics included) needs ``Authorization:
Bearer <key>``; the UI's static files and the API docs are open (they hold no data). The key is
checked by :class:`~odyssey.deploy.gateway.Gate`, an ASGI middleware in front of everything,
*before* the body is read or validated, so a request without a key learns nothing but 401. Errors
use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with its status codes (400
bad input, 401 no/bad key, 403 scope, 404 unknown model or id, 405 method, 413 too large, 429
rate or concurrency limit, 500 a bug, 504 request time limit); every code a route can return is
in its OpenAPI ``responses``. Each generation is recorded (prompt, output, candidate, params,
latency, tokens, key) by :mod:`odyssey.deploy.capture` before its response ends.

The parts: :mod:`odyssey.deploy.wire` (request and response shapes, errors),
:mod:`odyssey.deploy.gateway` (keys, limits, capture, one generation) and the routers of
:mod:`odyssey.deploy.routes`; :func:`create_app` assembles them.
"""

from __future__ import annotations

from odyssey.errors import require

# Before anything below imports fastapi: without the deploy extra, the error names the pip command.
require("fastapi", "deploy", "odyssey serve (the OpenAI-compatible server)")

from contextlib import asynccontextmanager  # noqa: E402

from fastapi import FastAPI  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from odyssey.deploy.gateway import Gate, Gateway, Served  # noqa: E402, F401  (Served: callers build them)
from odyssey.deploy.routes import docs, feedback, openai, ops, ui  # noqa: E402
from odyssey.deploy.routes.docs import DOCS_ASSETS  # noqa: E402
from odyssey.deploy.routes.ui import STATIC, SafeStatic  # noqa: E402, F401  (SafeStatic: tested here)
from odyssey.deploy.wire import APIError, error_body, error_response  # noqa: E402
from odyssey.spec import DeploySpec  # noqa: E402

# Route path -> the scope its key needs. Every API route is listed (create_app checks), so a new
# route cannot be left open by accident; /health, the docs and static files are open.
SCOPES: dict[str, str] = {
    "/metrics": "inference",
    "/v1/models": "inference",
    "/v1/chat/completions": "inference",
    "/v1/completions": "inference",
    "/v1/embeddings": "inference",
    "/v1/feedback": "feedback",
    "/ui/api/board": "inference",
    "/ui/api/artifacts/{artifact_id}": "inference",
    "/ui/api/pairs/next": "feedback",
}
OPEN_ROUTES = {"/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
ROUTERS = (docs, ops, openai, feedback, ui)  # in the order of the OpenAPI document


def create_app(
    project, served: list[Served], settings: DeploySpec | None = None, *, capture=None, startup=None, shutdown=None
) -> FastAPI:
    """The FastAPI app. ``startup``/``shutdown`` are async callables run in its lifespan."""
    settings = settings or project.spec.deploy

    @asynccontextmanager
    async def lifespan(app):
        if startup is not None:
            await startup()
        try:
            yield
        finally:
            if shutdown is not None:
                await shutdown()

    app = FastAPI(
        title="Odyssey",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description=f"OpenAI-compatible API for the project {project.spec.name!r}: "
        f"{', '.join(s.name for s in served)}. Send `Authorization: Bearer <key>` "
        "(`odyssey keys create`) on every route but /health.",
    )
    gateway = app.state.gateway = Gateway(project, served, settings, capture)
    routes = _assemble(app, settings)
    unlisted = [r.path for r in routes if hasattr(r, "methods") and r.path not in SCOPES and r.path not in OPEN_ROUTES]
    assert not unlisted, f"routes with no scope (add them to `SCOPES` or `OPEN_ROUTES`): {unlisted}"
    if settings.cors_origins:  # CORS is off unless origins are listed in deploy.cors_origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Gate, gateway=gateway, scopes=SCOPES, limit=settings.max_request_bytes, routes=routes)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    return app


def _assemble(app: FastAPI, settings: DeploySpec) -> list:
    """Include the routers and mount the static files; return every route, flat, in routing order."""
    own = list(app.router.routes)  # FastAPI's /openapi.json
    for module in ROUTERS:
        app.include_router(module.router)
    app.openapi = lambda: docs.openapi_document(app, SCOPES, settings.max_tokens)
    app.mount("/docs/assets", SafeStatic(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/ui", SafeStatic(directory=STATIC, html=True), name="ui")  # after the routes: /ui/api/... first
    return [*own, *(route for module in ROUTERS for route in module.router.routes), *app.router.routes[-2:]]


async def _api_error(request, exc: APIError):
    return error_response(exc)


async def _invalid(request, exc: RequestValidationError):
    """FastAPI's validation errors as OpenAI's 400, naming the first problem and its field."""
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


async def _http(request, exc: StarletteHTTPException):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(str(exc.detail), "invalid_request_error", kind),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )
