"""Client authentication in front of every route but /health (for load balancers).

Bearer tokens and remembered pairs are decided on the event loop; password hashing runs in
threads of its own limiter (``check_threads`` at once), so a flood of wrong passwords neither
blocks the loop nor takes the threads file and page work share. At most ``max_pending`` checks
run or wait; past that a request gets 503 with Retry-After instead of a place in the queue.
"""

from __future__ import annotations

import time

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.access import Access, PasswordCheck

OPEN_PATHS = ("/health",)


class RequireAuth:
    def __init__(
        self, app: ASGIApp, access: Access, check_threads: int = 2, max_pending: int = 64
    ) -> None:
        self.app = app
        self.access = access
        self.check_threads = check_threads
        self.max_pending = max_pending
        self.pending = 0
        self._limiter: anyio.CapacityLimiter | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.access.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        if self.access.refresh_due(time.monotonic()):
            await anyio.to_thread.run_sync(self.access.refresh)
        verdict = self.access.quick(header)
        if isinstance(verdict, PasswordCheck):
            if self.pending >= self.max_pending:
                await _refuse(send, 503, b"too many password checks at once, try again\n")
                return
            verdict = await self._check(verdict)
        if verdict:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, 401, b"authentication required\n")

    async def _check(self, pending: PasswordCheck) -> bool:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.check_threads)
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(self.access.check, pending, limiter=self._limiter)
        finally:
            self.pending -= 1


async def _refuse(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="pypi-proxy"'))
    else:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
