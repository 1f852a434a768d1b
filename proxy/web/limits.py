"""Refuse oversized requests before any routing: long paths (414), big or many headers (431),
methods nobody needs (405 comes from the router). The HTTP server accepts far more."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_PATH = 2048
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            status = 0
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) > MAX_PATH:
                status = 414
            else:
                headers = scope["headers"]
                size = sum(len(k) + len(v) for k, v in headers)
                if size > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
                    status = 431
            if status:
                body = b"request too large\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
