"""For operators: /stats (JSON), /metrics (Prometheus text) and /health; the status page at /
is rendered by ``proxy.web.status`` from the same figures."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from proxy import __version__
from proxy.metrics import CONTENT_TYPE, exposition, families
from proxy.redact import redact
from proxy.runtime import Runtime
from proxy.stats import Latency, latency, series, summary, top_projects, totals, upstream_errors


def _collect(runtime: Runtime, pending: Counter[str]) -> dict[str, Any]:
    cache = runtime.storage.totals()
    extra: dict[str, Any] = {}
    if runtime.upstream is not None:
        breakers = runtime.upstream.breaker
        extra["upstream_health"] = {**breakers.snapshot(), "origin": breakers.primary}
    for contribute in runtime.extra_stats:
        extra.update(contribute())
    now = time.time()
    numbers = totals(runtime.storage, pending)  # first: adds this worker's pending counts
    return summary(
        numbers,
        cache,
        {
            "upstream": redact(runtime.settings.upstream),
            "offline": runtime.settings.offline,
            "max_cache_size": runtime.settings.max_cache_size,
            "uptime_seconds": round(now - runtime.stats.started, 1),
            "version": __version__,
            "upstream_errors_by_origin": upstream_errors(runtime.storage),
            "top_projects": [
                {"project": name, "requests": count}
                for name, count in top_projects(runtime.storage)
            ],
            "last_hour": series(runtime.storage, now),
            **extra,
        },
    )


async def figures(request: Request) -> dict[str, Any]:
    """The /stats document: every worker's counts, this worker's recent errors."""
    runtime: Runtime = request.app.state.runtime
    pending = runtime.stats.take()
    data = await anyio.to_thread.run_sync(_collect, runtime, pending)
    runtime.stats.pending.update(pending)  # whatever the disk would not take yet
    errors = getattr(request.app.state, "errors", None)
    data["recent_errors"] = errors.recent() if errors is not None else []
    return data


async def stats(request: Request) -> Response:
    data = await figures(request)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def health(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    ok = await anyio.to_thread.run_sync(runtime.storage.files_usable)
    if not ok:
        return JSONResponse({"status": "error", "reason": "cache directory missing"}, 503)
    return JSONResponse({"status": "ok", "offline": runtime.settings.offline})


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    data = await figures(request)
    histogram: list[Latency] = await anyio.to_thread.run_sync(latency, runtime.storage)
    text = exposition(families(data, histogram))
    return PlainTextResponse(text, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


async def robots(request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
