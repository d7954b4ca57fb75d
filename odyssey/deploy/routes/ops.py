"""For operators: /health (open: it holds no data) and /metrics (Prometheus text format)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from odyssey.deploy.gateway import Gateway
from odyssey.deploy.wire import KEYED_ERRORS, OPEN_ERRORS, HealthOut, ok_doc

router = APIRouter(tags=["ops"])


@router.get("/health", responses={**OPEN_ERRORS, **ok_doc(HealthOut)})
async def health(request: Request):
    gw = Gateway.of(request)
    return {"status": "ok", "models": list(gw.models), "uptime_s": round(time.time() - gw.started, 1)}


@router.get(
    "/metrics",
    responses={
        **KEYED_ERRORS,
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    },
)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format (written by hand: a few counters do not need prometheus_client)."""
    gw = Gateway.of(request)
    lines = [
        "# HELP odyssey_uptime_seconds Seconds since the server started.",
        "# TYPE odyssey_uptime_seconds gauge",
        f"odyssey_uptime_seconds {time.time() - gw.started:.1f}",
        "# HELP odyssey_http_requests_total HTTP responses by route, method, status code and class.",
        "# TYPE odyssey_http_requests_total counter",
    ]
    for (route, method, code), value in sorted(gw.http.items()):
        route = route.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f'odyssey_http_requests_total{{route="{route}",method="{method}",code="{code}",'
            f'class="{code // 100}xx"}} {value}'
        )
    for name, value in sorted(gw.counters.items()):
        lines += [
            f"# HELP odyssey_{name}_total Odyssey counter {name.replace('_', ' ')}.",
            f"# TYPE odyssey_{name}_total counter",
            f"odyssey_{name}_total {value:g}",
        ]
    lines += [
        "# HELP odyssey_inflight Requests being answered now.",
        "# TYPE odyssey_inflight gauge",
        f"odyssey_inflight {sum(gw.limiter.inflight.values())}",
    ]
    if gw.capture is not None:
        lines += [
            "# HELP odyssey_capture_written_total Records committed to the store.",
            "# TYPE odyssey_capture_written_total counter",
            f"odyssey_capture_written_total {gw.capture.written}",
            "# HELP odyssey_capture_pending Records waiting to be committed.",
            "# TYPE odyssey_capture_pending gauge",
            f"odyssey_capture_pending {gw.capture.pending}",
        ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
