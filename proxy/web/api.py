"""/api/projects and /api/projects/<name>: what the cache and the mirror hold, as JSON.

Authenticated as the pages are (RequireAuth guards every path but /health). Listing pages
through the cache (``?limit=`` up to MAX_LIMIT; ``?after=<name>`` in name order, or ``?page=``
in any order of ``?sort=name|bytes|files|last_access``), so memory stays flat however many
projects it holds. An order other than by name reads every page once and is then kept for
``catalog.SORTED_MAX_AGE`` seconds (``as_of`` says when it was read). The mirror answers both.
"""

from __future__ import annotations

from functools import partial

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.catalog import MAX_DEPTH, SORT_KEYS, SortKey
from proxy.names import is_valid_project_name, normalize
from proxy.runtime import Runtime
from proxy.web.responses import error

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _int(request: Request, key: str, default: int, low: int, high: int) -> int | str:
    """The query parameter as an int in [low, high], or the message that refuses it."""
    value = request.query_params.get(key)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        return f"{key} must be a whole number from {low} to {high}"
    return int(value)


async def projects(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    sort = request.query_params.get("sort", "name")
    if sort not in SORT_KEYS:
        return error(400, f"sort must be one of {', '.join(SORT_KEYS)}")
    key: SortKey = sort
    limit = _int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    if isinstance(limit, str):
        return error(400, limit)
    page = _int(request, "page", 1, 1, MAX_DEPTH)
    if isinstance(page, str):
        return error(400, page)
    after = request.query_params.get("after")
    mirror = runtime.mirror
    if after is not None:
        if key != "name" or "page" in request.query_params:
            return error(400, "after pages in name order only, and not with page")
        listing = partial(mirror.list_projects, key, after=normalize(after), limit=limit)
    else:
        offset = (page - 1) * limit
        if key != "name" and offset + limit > MAX_DEPTH:
            return error(
                400, f"pages in {key} order reach {MAX_DEPTH} rows; use sort=name with after="
            )
        listing = partial(mirror.list_projects, key, offset=offset, limit=limit)
    rows, as_of = await anyio.to_thread.run_sync(listing)
    body: dict[str, object] = {
        "sort": key,
        "as_of": as_of,
        "limit": limit,
        "projects": [r.as_json() for r in rows],
        "totals": await anyio.to_thread.run_sync(mirror.stored_totals),
    }
    if len(rows) == limit:
        # Where the next page starts; absent on the last page.
        by_name = key == "name" and (after is not None or page == 1)
        body["next"] = (
            f"?sort=name&limit={limit}&after={rows[-1].name}"
            if by_name
            else f"?sort={key}&limit={limit}&page={page + 1}"
        )
    return JSONResponse(body)


async def project(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    name: str = request.path_params["project"]
    if not is_valid_project_name(name):
        return error(400, "not a valid project name")
    normalized = normalize(name)
    mirror = runtime.mirror
    record = await mirror.stored_page(normalized)
    if record is None:
        return error(404, f"the cache holds no page of {normalized}")

    def gather() -> dict[str, object]:
        summary = mirror.project_facts(record).as_json()
        stored = summary.pop("files")  # "files" lists them below
        summary["stored_files"] = stored
        summary["held_files"] = stored  # its name before "held" came to mean the held list
        summary["files"] = [f.as_json() for f in mirror.project_files(record)]
        return summary

    return JSONResponse(await anyio.to_thread.run_sync(gather))
