"""Package files and PEP 658 metadata: from disk when cached, else streamed while cached."""

from __future__ import annotations

import functools
import os
import time

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from proxy.errors import FillFailed, NotFound, RecordUnreadable, UpstreamError
from proxy.files import locate
from proxy.filestore import StoredFile
from proxy.follow import Progress, read_progress
from proxy.names import is_safe_filename, is_valid_project_name, normalize
from proxy.origins import origin_of
from proxy.runtime import Runtime
from proxy.web.counting import mark
from proxy.web.responses import FileResponse, StreamResponse, error

TOUCH_EVERY = 600.0  # seconds between atime updates of one file


def _touch(runtime: Runtime, stored: StoredFile) -> None:
    now = time.time()
    touched = runtime.touched
    key = (stored.sha256, stored.filename)
    if now - touched.get(key, 0.0) > TOUCH_EVERY:
        if len(touched) > 100_000:
            touched.clear()
        touched[key] = now
        runtime.storage.touch(stored, now)


def _hit(request: Request, runtime: Runtime, stored: StoredFile) -> ASGIApp | None:
    """A response from the stored file, or None if it went (evicted) since it was found."""
    if stored.path is None:  # only in the bucket (s3_redirect): the client fetches it there
        url = runtime.storage.presign(stored, runtime.settings.s3_redirect_expiry)
        _touch(runtime, stored)
        return RedirectResponse(url, status_code=307) if url is not None else None
    try:
        fd = os.open(stored.path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    _touch(runtime, stored)
    return _from_descriptor(request, runtime, fd, stored.sha256)


def _from_descriptor(request: Request, runtime: Runtime, fd: int, sha256: str) -> ASGIApp:
    """A file answer (HEAD, Range, If-Range) from an open descriptor, which it then owns."""
    return FileResponse(
        fd,
        os.fstat(fd),
        etag=sha256,
        method=request.method,
        range_header=request.headers.get("range"),
        if_range=request.headers.get("if-range"),
        on_sent=lambda n: runtime.stats.add("bytes_served", n),
    )


def _size_only(size: int, etag: str | None) -> Response:
    """HEAD of a file that is streamed but not kept: its size, and no promise of ranges."""
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
    return Response(status_code=200, headers=headers)


def _is_variant(value: str) -> bool:
    return len(value) in (32, 64) and all(c in "0123456789abcdef" for c in value)


async def serve_file(request: Request) -> Response | ASGIApp:
    runtime: Runtime = request.app.state.runtime
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
    try:
        located = await locate(runtime.index, runtime.storage, project, filename, variant)
    except NotFound as exc:
        return error(404, str(exc))
    except RecordUnreadable as exc:
        return error(503, str(exc))
    except UpstreamError as exc:
        return error(502, f"the upstream index is unavailable: {exc}")
    if located.damaged:
        runtime.stats.add("integrity_errors")
    stored = located.stored
    if stored is not None and stored.path is None and not runtime.settings.s3_redirect:
        # Only in the shared bucket: a GET is sent as it is copied here and verified; HEAD
        # and Range wait for the verified copy, then are a hit as any other.
        chunks = runtime.storage.stream_in(stored)
        if request.method == "GET" and "range" not in request.headers and chunks is not None:
            mark(request.scope, "hit", project)
            _touch(runtime, stored)
            served = functools.partial(runtime.stats.add, "bytes_served")
            return StreamResponse(chunks, total=stored.size, etag=stored.sha256, on_sent=served)
        stored = await anyio.to_thread.run_sync(runtime.storage.local_copy, stored)
    if stored is not None:
        hit = _hit(request, runtime, stored)
        if hit is not None:
            mark(request.scope, "hit", project)
            return hit
    if runtime.filler is None:
        if located.damaged:
            return error(
                503, f"the stored copy of {filename} was damaged and dropped; the proxy is offline"
            )
        return error(404, f"{filename} is not in this mirror, and the proxy is offline")
    mark(request.scope, "miss", project)  # HEAD and Range too: one request, one miss
    target = located.target
    too_big = runtime.filler.too_big(target)
    if too_big and request.method == "HEAD" and target.size is not None:
        return _size_only(target.size, target.sha256)
    progress = runtime.filler.start(target)
    try:
        # Our own descriptor at once, before any wait: the download can end and its file be
        # evicted while this request waits, and the reader must still have the bytes.
        source = progress.take_source()
    except FillFailed:
        source = None
    await progress.wait_ready()
    if progress.done and progress.error:
        if source is not None:
            os.close(source)
        progress.release()
        if progress.not_found:
            return error(404, f"the upstream has no {filename}")
        origin = origin_of(target.url)
        runtime.stats.upstream_error(str(origin) if origin is not None else "other")
        return error(502, f"could not fetch {filename} from the upstream: {progress.error}")
    if not too_big and (request.method == "HEAD" or request.headers.get("range") is not None):
        return await _whole_then_hit(request, runtime, progress, source, filename)

    def sent(n: int) -> None:
        runtime.stats.add("bytes_served", n)
        progress.release()  # also when the client left before the body began

    # A file too big to keep answers a Range with the whole file: a 200 is always correct.
    return StreamResponse(
        read_progress(progress, source), total=progress.total, etag=target.sha256, on_sent=sent
    )


async def _whole_then_hit(
    request: Request, runtime: Runtime, progress: Progress, source: int | None, filename: str
) -> Response | ASGIApp:
    """HEAD and Range on a miss: wait for the verified file, then answer from the very bytes
    read (a descriptor kept open), whether or not the file is still stored by then."""
    try:
        if source is None:
            source = progress.open_source()
    except FillFailed as exc:
        progress.release()
        return error(502, f"could not fetch {filename} from the upstream: {exc}")
    keep = os.dup(source)
    try:
        async for _ in read_progress(progress, source):
            pass
    except FillFailed as exc:
        os.close(keep)
        return error(502, f"could not fetch {filename} from the upstream: {exc}")
    # Just stored (or streamed whole): its access time is now, no touch needed.
    sha = progress.expected or progress.sha256 or ""
    return _from_descriptor(request, runtime, keep, sha)
