"""/pypi/<project>/json and /pypi/<project>/<version>/json: the legacy JSON API, from the cache.

The project's simple page is looked up first (fetched if needed), so that the file URLs the
document gives are ones the proxy serves; odd names get a 301 to the normalized one.
"""

from __future__ import annotations

import gzip
import hashlib

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.errors import NotFound, UpstreamError
from proxy.jsonapi import is_valid_version, render
from proxy.models import Body
from proxy.names import is_valid_project_name, normalize
from proxy.runtime import Runtime
from proxy.web.responses import RawResponse, error, page_parts, wants_gzip

MEDIA = "application/json"


async def document(request: Request) -> Response | RawResponse:
    runtime: Runtime = request.app.state.runtime
    name: str = request.path_params["project"]
    version: str | None = request.path_params.get("version")
    if not is_valid_project_name(name):
        return error(400, "not a valid project name")
    if version is not None and not is_valid_version(version):
        return error(400, "not a valid version")
    project = normalize(name)
    if project != name:
        tail = "json" if version is None else f"{version}/json"
        return RedirectResponse(f"/pypi/{project}/{tail}", status_code=301)
    try:
        record = await runtime.mirror.json_document(project, version)
    except NotFound as exc:
        return error(404, str(exc))
    except UpstreamError as exc:
        return error(502, f"the upstream is unavailable and this JSON is not cached: {exc}")
    base = str(request.base_url)
    raw = render(record, base)
    gz = b""
    if wants_gzip(request.headers.get("accept-encoding")):
        gz = await anyio.to_thread.run_sync(lambda: gzip.compress(raw, compresslevel=6, mtime=0))
    # The URLs name this base: another base is another representation.
    etag = hashlib.sha256(f"{record.etag} {base}".encode()).hexdigest()[:32]
    status, headers, content = page_parts(
        Body(raw=raw, gz=gz, etag=etag),
        MEDIA,
        int(runtime.settings.index_ttl),
        record.serial,
        accept_encoding=request.headers.get("accept-encoding"),
        if_none_match=request.headers.get("if-none-match"),
        head=request.method == "HEAD",
    )
    return RawResponse(status, headers, content)
