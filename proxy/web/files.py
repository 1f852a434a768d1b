"""Package files and PEP 658 metadata: the request checked, the mirror asked, its answer sent.

Which answer (a stored hit, a download read while it grows, a refusal) is the mirror's
decision (``proxy.cache``); this module only turns it into a response."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from proxy.answers import Handover, Hit, InMemory, Partial, Redirect, Refusal, SizeOnly, Stream
from proxy.cache import Mirror
from proxy.names import is_safe_filename, is_valid_project_name, normalize
from proxy.web.accel import accel_response
from proxy.web.counting import mark
from proxy.web.responses import FileResponse, MemoryResponse, StreamResponse, error

REFUSED = {"not_found": 404, "unavailable": 503, "upstream_failed": 502}


def _is_variant(value: str) -> bool:
    return len(value) in (32, 64) and all(c in "0123456789abcdef" for c in value)


def _size_only(answer: SizeOnly) -> Response:
    """HEAD on a miss: the size; ranges promised unless the file is too big to keep."""
    headers = {"Content-Length": str(answer.size), "Content-Type": "application/octet-stream"}
    if answer.ranges:
        headers["Accept-Ranges"] = "bytes"
    if answer.sha256 is not None:
        headers["ETag"] = f'"{answer.sha256}"'
    return Response(status_code=200, headers=headers)


def _partial(answer: Partial) -> Response:
    end = answer.start + len(answer.data) - 1
    headers = {
        "Content-Range": f"bytes {answer.start}-{end}/{answer.total}",
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        # The upstream's bytes, not yet verified: no validator that would let a client join
        # them with verified ranges as one representation, and no cache keeps them.
        "Cache-Control": "no-store",
    }
    answer.sent(len(answer.data))
    return Response(answer.data, status_code=206, headers=headers)


async def serve_file(request: Request) -> Response | ASGIApp:
    runtime = request.app.state.runtime
    mirror: Mirror = runtime.mirror
    project: str = request.path_params["project"]
    filename: str = request.path_params["filename"]
    variant: str | None = request.path_params.get("variant")
    if (
        not is_valid_project_name(project)
        or not is_safe_filename(filename)
        or (variant is not None and not _is_variant(variant))
    ):
        return error(400, "not a valid project or file name")
    project = normalize(project)
    answer = await mirror.file(
        project,
        filename,
        variant,
        head=request.method == "HEAD",
        range_header=request.headers.get("range"),
        if_range=request.headers.get("if-range"),
    )
    if isinstance(answer, Refusal):
        return error(REFUSED[answer.kind], answer.message)
    mark(request.scope, answer.outcome, project)  # HEAD and Range too: one request, one count
    if isinstance(answer, Hit):
        return FileResponse(
            answer.fd,
            os.fstat(answer.fd),
            etag=answer.sha256,
            method=request.method,
            range_header=request.headers.get("range"),
            if_range=request.headers.get("if-range"),
            on_sent=answer.sent,
        )
    if isinstance(answer, InMemory):
        return MemoryResponse(
            answer.data,
            answer.mtime,
            etag=answer.sha256,
            method=request.method,
            range_header=request.headers.get("range"),
            if_range=request.headers.get("if-range"),
            on_sent=answer.sent,
        )
    if isinstance(answer, Handover):
        prefix = runtime.settings.accel_redirect
        assert prefix is not None  # the mirror hands over only when it is set
        return accel_response(prefix, answer.relative, answer.stored)
    if isinstance(answer, Redirect):
        return RedirectResponse(answer.url, status_code=307)
    if isinstance(answer, SizeOnly):
        return _size_only(answer)
    if isinstance(answer, Partial):
        return _partial(answer)
    assert isinstance(answer, Stream)
    return StreamResponse(
        answer.chunks, total=answer.total, etag=answer.sha256, on_sent=answer.sent
    )
