"""Counting each request once, here: the outermost middleware times every answer and hands
its route and outcome to the mirror (``Mirror.count_request``, which hands them to
``Stats.request``) when the answer is complete.

Handlers only say what they decided (``mark(scope, "hit" | "miss" | "stale", project)``); the
status code decides the rest (404 is ``not_found``, other 4xx ``client_error``, 5xx or an
exception ``error``, a redirect ``redirect``). A HEAD or a Range request is one request like any
other, so the hit ratio is exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LABEL = "pypi_proxy.outcome"
OPS_PATHS = frozenset({"/", "/health", "/stats", "/metrics", "/robots.txt"})


@dataclass
class _Label:
    outcome: str | None = None
    project: str | None = None


def mark(scope: Scope, outcome: str, project: str | None = None) -> None:
    """Say how the cache answered this request (a hit, a miss, a stale page)."""
    label: _Label | None = scope.get(LABEL)
    if label is not None:
        label.outcome = outcome
        if project is not None:
            label.project = project


def route_of(path: str) -> str:
    """A small fixed set of route names, so the metrics' label values stay bounded."""
    if path.startswith("/simple/"):
        return "root" if path == "/simple/" else "page"
    if path.startswith("/files/"):
        return "file"
    if path in OPS_PATHS:
        return "ops"
    for prefix, route in (("/admin/", "admin"), ("/api/", "api"), ("/pypi", "json")):
        if path.startswith(prefix):
            return route
    return "other"


def outcome_of(status: int, marked: str | None) -> str:
    if status == 404:
        return "not_found"
    if status >= 500 or status == 0:  # 0: the app failed before answering
        return "error"
    if status >= 400:
        return "client_error"
    if status in (301, 302, 307, 308):
        return "redirect"
    return marked or "ok"


class CountRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        label = scope[LABEL] = _Label()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # Looked up each time: a lifespan that runs again makes a new runtime.
            runtime: Any = getattr(scope["app"].state, "runtime", None)
            if runtime is not None:
                runtime.mirror.count_request(
                    route_of(scope["path"]),
                    outcome_of(status, label.outcome),
                    time.perf_counter() - started,
                    label.project,
                )
