"""The hot path: a fresh page in memory is answered here, before routing, with the stored
bytes. Anything else (stale, missing, odd names, queries, HEAD) goes on to the router."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.models import JSON_V1
from proxy.negotiate import choose
from proxy.runtime import Runtime
from proxy.web.counting import mark
from proxy.web.responses import page_parts


class FastPages:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and path.startswith("/simple/")
            and path.endswith("/")
            and path.count("/") == 3
            and not scope.get("query_string")
        ):
            runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
            record = runtime.mirror.peek(path[8:-1]) if runtime is not None else None
            if record is not None and runtime is not None:
                accept = encoding = etag = None
                for key, value in scope["headers"]:
                    if key == b"accept":
                        accept = value.decode("latin-1")
                    elif key == b"accept-encoding":
                        encoding = value.decode("latin-1")
                    elif key == b"if-none-match":
                        etag = value.decode("latin-1")
                media = choose(accept)
                if media is not None:
                    body = record.rendered.json if media == JSON_V1 else record.rendered.html
                    status, headers, content = page_parts(
                        body,
                        media,
                        int(runtime.settings.index_ttl),
                        record.page.serial,
                        accept_encoding=encoding,
                        if_none_match=etag,
                        head=False,
                    )
                    mark(scope, "hit", path[8:-1])
                    await send(
                        {"type": "http.response.start", "status": status, "headers": headers}
                    )
                    await send({"type": "http.response.body", "body": content})
                    return
        await self.app(scope, receive, send)
