"""For operators: /stats (JSON), /metrics (Prometheus text), /health and a status page at /."""

from __future__ import annotations

import time
from collections import Counter
from html import escape
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from proxy import __version__
from proxy.runtime import Runtime
from proxy.stats import summary, totals
from proxy.upstream import redact


def _collect(runtime: Runtime, pending: Counter[str]) -> dict[str, Any]:
    cache = runtime.storage.totals()
    extra: dict[str, Any] = {}
    if runtime.upstream is not None:
        extra["upstream_health"] = runtime.upstream.breaker.snapshot()
    for contribute in runtime.extra_stats:
        extra.update(contribute())
    return summary(
        totals(runtime.storage, pending),
        cache,
        {
            "upstream": redact(runtime.settings.upstream),
            "offline": runtime.settings.offline,
            "max_cache_size": runtime.settings.max_cache_size,
            "uptime_seconds": round(time.time() - runtime.stats.started, 1),
            "version": __version__,
            **extra,
        },
    )


async def _figures(runtime: Runtime) -> dict[str, Any]:
    pending = runtime.stats.take()
    data = await anyio.to_thread.run_sync(_collect, runtime, pending)
    runtime.stats.pending.update(pending)  # whatever the disk would not take yet
    return data


async def stats(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    data = await _figures(runtime)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


async def health(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    ok = await anyio.to_thread.run_sync(runtime.storage.files_dir.is_dir)
    if not ok:
        return JSONResponse({"status": "error", "reason": "cache directory missing"}, 503)
    return JSONResponse({"status": "ok", "offline": runtime.settings.offline})


def _flatten(prefix: str, data: dict[str, Any], out: list[tuple[str, float]]) -> None:
    for key, value in data.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            _flatten(name, value, out)
        elif isinstance(value, bool):
            out.append((name, 1.0 if value else 0.0))
        elif isinstance(value, int | float):
            out.append((name, float(value)))


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    data = await _figures(runtime)
    rows: list[tuple[str, float]] = []
    _flatten("pypi_proxy", data, rows)
    lines = []
    for name, value in rows:
        kind = "gauge" if "cache" in name or "ratio" in name or "uptime" in name else "counter"
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value:g}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _status_html(data: dict[str, Any], base: str) -> str:
    def rows(items: dict[str, Any], prefix: str = "") -> str:
        out = []
        for key, value in items.items():
            if isinstance(value, dict):
                out.append(rows(value, f"{prefix}{key} "))
            else:
                out.append(f"<tr><th>{escape(prefix + key)}</th><td>{escape(str(value))}</td></tr>")
        return "".join(out)

    index = escape(base + "simple/")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>pypi-proxy</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        "code{background:#eee;padding:2px 4px}</style></head><body>"
        f"<h1>pypi-proxy {escape(__version__)}</h1>"
        f"<p>Point pip at this mirror: <code>PIP_INDEX_URL={index} pip install ...</code><br>"
        f"or uv: <code>uv pip install --index-url {index} ...</code></p>"
        f"<table>{rows(data)}</table>"
        "<p><a href='stats'>/stats</a> · <a href='metrics'>/metrics</a> · "
        "<a href='health'>/health</a> · <a href='simple/'>/simple/</a></p></body></html>"
    )


async def status_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    data = await _figures(runtime)
    return HTMLResponse(_status_html(data, str(request.base_url)))


async def robots(request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
