"""``POST /pypi``: the XML-RPC serial API about what this proxy holds (see proxy/serials.py)."""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response

from proxy.runtime import Runtime
from proxy.serials import MAX_CALL_SIZE, BadCall, parse_call
from proxy.web.responses import error


async def _body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_CALL_SIZE (read no further than that)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CALL_SIZE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def xmlrpc(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_CALL_SIZE:
        return error(413, f"an XML-RPC call of at most {MAX_CALL_SIZE} bytes is expected")
    body = await _body(request)
    if body is None:
        return error(413, f"an XML-RPC call of at most {MAX_CALL_SIZE} bytes is expected")
    try:
        method, params = parse_call(body)
    except BadCall as exc:
        return error(400, str(exc))
    content = await anyio.to_thread.run_sync(runtime.mirror.serial_answer, method, params)
    return Response(content, media_type="text/xml")
