"""Client authentication in front of every route but /health (for load balancers)."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.access import Access

OPEN_PATHS = ("/health",)


class RequireAuth:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.access.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        # bcrypt is slow: check off the event loop.
        if await anyio.to_thread.run_sync(self.access.allows, header):
            await self.app(scope, receive, send)
            return
        body = b"authentication required\n"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Basic realm="pypi-proxy"'),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
