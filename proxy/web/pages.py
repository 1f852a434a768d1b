"""/simple/ and /simple/<project>/: negotiated, from stored bytes, redirects for odd names.
The mirror (``proxy.cache``) finds the page and says how (hit, miss, stale); this module checks
the request and sends the page in the type the client asked for."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.errors import NotFound, RecordUnreadable, UpstreamError
from proxy.models import JSON_V1, Rendered
from proxy.names import is_valid_project_name, normalize
from proxy.negotiate import choose
from proxy.runtime import Runtime
from proxy.web.counting import mark
from proxy.web.responses import RawResponse, error, page_response

ACCEPTABLE = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html, text/html"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _media(request: Request) -> str | None:
    return choose(request.headers.get("accept"), request.query_params.get("format"))


def _redirect(request: Request, path: str) -> Response:
    query = request.url.query
    return RedirectResponse(path + (f"?{query}" if query else ""), status_code=301)


def _send(
    request: Request, runtime: Runtime, rendered: Rendered, media: str, serial: int | None
) -> Response | RawResponse:
    body = rendered.json if media == JSON_V1 else rendered.html
    return page_response(request, body, media, int(runtime.settings.index_ttl), serial)


async def root(request: Request) -> Response | RawResponse:
    runtime = _runtime(request)
    media = _media(request)
    if media is None:
        return error(406, f"cannot serve any of the requested types; try {ACCEPTABLE}")
    try:
        answer = await runtime.mirror.root()
    except UpstreamError as exc:
        return error(502, f"the upstream index is unavailable: {exc}")
    mark(request.scope, answer.outcome)
    return _send(request, runtime, answer.record.rendered, media, answer.serial)


async def root_redirect(request: Request) -> Response:
    return _redirect(request, "/simple/")


async def project(request: Request) -> Response | RawResponse:
    runtime = _runtime(request)
    name: str = request.path_params["project"]
    if not is_valid_project_name(name):
        return error(400, "not a valid project name")
    normalized = normalize(name)
    if normalized != name or not request.url.path.endswith("/"):
        return _redirect(request, f"/simple/{normalized}/")
    media = _media(request)
    if media is None:
        return error(406, f"cannot serve any of the requested types; try {ACCEPTABLE}")
    try:
        answer = await runtime.mirror.page(normalized)
    except NotFound as exc:
        return error(404, str(exc))
    except RecordUnreadable as exc:
        return error(503, str(exc))
    except UpstreamError as exc:
        return error(
            502, f"the upstream index is unavailable and {normalized} is not cached: {exc}"
        )
    mark(request.scope, answer.outcome, normalized)
    return _send(request, runtime, answer.rendered, media, answer.serial)
