"""The API docs: Swagger UI at /docs, served from local files (no CDN: /docs works offline), and
the OpenAPI document at /openapi.json with the bearer-key scheme on every keyed route."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

# Swagger UI 5 (swagger-ui-dist, Apache-2.0: LICENSE and NOTICE beside it)
DOCS_ASSETS = Path(__file__).parent.parent / "static" / "docs"

router = APIRouter()


@router.get("/docs", include_in_schema=False)
async def docs():
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Odyssey API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
        oauth2_redirect_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )  # no call to swagger.io


def openapi_document(app, scopes: dict[str, str], max_tokens: int) -> dict:
    """FastAPI's document plus the bearer-key scheme on every keyed route (``scopes``: path ->
    scope), without the 422 FastAPI documents by default (validation errors are 400 here, as
    OpenAI's are), with links from an answer to its feedback and this server's max_tokens."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "an Odyssey key: `odyssey keys create --name NAME`",
    }
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)
            if path in scopes:
                op["security"] = [{"apiKey": []}]
                op["description"] = (op.get("description") or "") + f"\n\nNeeds a key with the '{scopes[path]}' scope."
    _link_feedback(doc)
    schemas = doc["components"].get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name in ("ChatBody", "CompletionBody"):  # this server's own limit, not a constant
        if name in schemas:
            schemas[name]["properties"]["max_tokens"]["anyOf"][0]["maximum"] = max_tokens
    app.openapi_schema = doc
    return doc


def _link_feedback(doc: dict) -> None:
    """Links: an answer's id is what feedback refers to (Schemathesis's stateful phase follows them)."""
    feedback_op = doc["paths"]["/v1/feedback"]["post"]["operationId"]
    for path in ("/v1/chat/completions", "/v1/completions"):
        doc["paths"][path]["post"]["responses"]["200"]["links"] = {
            "ThumbsUp": {
                "operationId": feedback_op,
                "description": "thumbs up on this answer",
                "requestBody": {"request_id": "$response.body#/id", "thumbs": "up"},
            },
            "Correction": {
                "operationId": feedback_op,
                "description": "a better answer for this one",
                "requestBody": {"request_id": "$response.body#/id", "correction": "a better answer"},
            },
        }
