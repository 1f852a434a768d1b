"""The access log: one line per request, in Apache's combined format, with its fields as the
record's extras (what the JSON log format shows).

``127.0.0.1 - - [02/Dec/2026:06:45:04 +0000] "GET /simple/demo/ HTTP/1.1" 200 1234 "-" "pip/24.0"``

It wraps the whole app, so the status and the bytes are what the client was sent. Client-sent
text (the request line, Referer, User-Agent) is escaped as Apache does (``"``, ``\\`` and
anything unprintable as ``\\xhh``), so a request cannot forge a log line or break a parser. The
user field is always ``-``: tools put tokens in the user part of an index URL.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("proxy.access")


def escape(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            # Client text arrives as latin-1 (one char a byte): each shows as the byte it was.
            raw = char.encode("latin-1") if ord(char) < 256 else char.encode("utf-8", "replace")
            out.extend(f"\\x{byte:02x}" for byte in raw)
    return "".join(out)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        clock = time.monotonic()
        status = 0
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self._log(scope, started, time.monotonic() - clock, status, sent)

    @staticmethod
    def _log(scope: Scope, started: float, elapsed: float, status: int, sent: int) -> None:
        client = scope.get("client")
        host = client[0] if client else "-"
        path = scope.get("raw_path") or scope.get("path", "").encode()
        target = path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        method = scope.get("method", "-")
        protocol = f"HTTP/{scope.get('http_version', '1.1')}"
        referer = _header(scope, b"referer")
        agent = _header(scope, b"user-agent")
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(started))
        line = (
            f'{host} - - [{when}] "{escape(method)} {escape(target)} {protocol}" '
            f"{status or '-'} {sent or '-'} "
            f'"{escape(referer) if referer else "-"}" "{escape(agent) if agent else "-"}"'
        )
        fields: dict[str, Any] = {
            "client": host,
            "method": method,
            "path": target,
            "protocol": protocol,
            "status": status or None,  # None: the request ended before any answer
            "bytes": sent,
            "referer": referer,
            "user_agent": agent,
            "ms": round(elapsed * 1000, 1),
        }
        log.info("%s", line, extra=fields)
