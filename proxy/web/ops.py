"""For operators: /stats (JSON), /metrics (Prometheus text) and /health; the status page at /
is rendered by ``proxy.web.status`` from the same figures."""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from proxy import __version__
from proxy.answers import Figures
from proxy.metrics import CONTENT_TYPE, exposition, families
from proxy.redact import redact
from proxy.runtime import Runtime
from proxy.stats import summary


def _summary(runtime: Runtime, figures: Figures) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    health = runtime.mirror.upstream_health()
    if health is not None:
        extra["upstream_health"] = health
    for contribute in runtime.extra_stats:
        extra.update(contribute())
    return summary(
        figures.counters,
        figures.cache,
        {
            "upstream": redact(runtime.settings.upstream),
            "offline": runtime.settings.offline,
            "max_cache_size": runtime.settings.max_cache_size,
            "uptime_seconds": figures.uptime_seconds,
            "version": __version__,
            "upstream_errors_by_origin": figures.upstream_errors_by_origin,
            "top_projects": figures.top_projects,
            "last_hour": figures.last_hour,
            **extra,
        },
    )


async def figures(request: Request) -> dict[str, Any]:
    """The /stats document: every worker's counts, this worker's recent errors."""
    runtime: Runtime = request.app.state.runtime
    found = await runtime.mirror.figures()
    # Services' figures may block (the prefetch state's database): off the event loop.
    data = await anyio.to_thread.run_sync(_summary, runtime, found)
    errors = getattr(request.app.state, "errors", None)
    data["recent_errors"] = errors.recent() if errors is not None else []
    return data


async def stats(request: Request) -> Response:
    data = await figures(request)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def health(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if not await runtime.mirror.usable():
        return JSONResponse({"status": "error", "reason": "cache directory missing"}, 503)
    return JSONResponse({"status": "ok", "offline": runtime.settings.offline})


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    data = await figures(request)
    text = exposition(families(data, await runtime.mirror.latency()))
    return PlainTextResponse(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


async def robots(request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
