"""/admin/...: state-changing actions, only with the admin token (Bearer or X-Admin-Token).

- ``POST /admin/prefetch``: start a prefetch pass (202); 409 with the running pass's progress
  when one runs (here or in any process on this cache)
- ``POST /admin/verify``: start a scrub pass (hash every stored file, drop what is damaged,
  fetch mirrored files again); 409 if one runs
- ``POST /admin/projects/<name>/refresh``: ask the upstream for one page now; its serial
- ``DELETE /admin/projects/<name>``: forget a project's page and its files the mirror does not
  pin; 404 for a project the cache never held
- ``POST /admin/forget/<project>``: as before, drop a project's cached page only (its files
  stay until evicted); every worker follows within about a second (the page's generation
  changes in the cache), and the next prefetch pass brings a mirrored project's page back
- ``POST /admin/<name>``: any other action a service registered

Every action is logged with who asked: the client's address and which credential it showed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.errors import NotFound, UpstreamError
from proxy.names import is_valid_project_name, normalize
from proxy.runtime import Runtime
from proxy.scrub import last_scrub, scrub_once, scrubbing
from proxy.web.responses import error

log = logging.getLogger(__name__)


def _credential(request: Request, token: str) -> str | None:
    """Which credential carried the admin token ("bearer" or "x-admin-token"), or None."""
    # X-Admin-Token leaves Authorization free for client authentication.
    header = request.headers.get("authorization", "")
    offered = [("x-admin-token", request.headers.get("x-admin-token", ""))]
    if header.lower().startswith("bearer "):
        offered.append(("bearer", header[7:]))
    for kind, given in offered:
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return kind
    return None


def _guard(request: Request, what: str) -> tuple[Runtime, Response | None]:
    """The runtime, and a refusal unless the request carries the admin token; logs who asked."""
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.admin_token
    if token is None:
        return runtime, error(403, "admin actions are disabled: no admin_token is set")
    kind = _credential(request, token)
    client = request.client.host if request.client else "unknown"
    if kind is None:
        log.warning("admin %s refused: no valid admin token from %s", what, client)
        return runtime, error(401, "admin token required", {"WWW-Authenticate": "Bearer"})
    log.info("admin %s asked by %s (%s)", what, client, kind)
    return runtime, None


def _project(request: Request) -> str | None:
    name: str = request.path_params["project"]
    return normalize(name) if is_valid_project_name(name) else None


async def prefetch(request: Request) -> Response:
    runtime, refused = _guard(request, "prefetch")
    if refused is not None:
        return refused
    start = runtime.actions.get("prefetch")
    if start is None:
        return error(409, "no prefetcher runs in this server (it is offline)")
    result = await start()
    if result.get("started") is False:
        return JSONResponse(result, status_code=409)
    return JSONResponse(result, status_code=202)


def _verifying(request: Request) -> set[asyncio.Task[Any]]:
    tasks: set[asyncio.Task[Any]] | None = getattr(request.app.state, "verifying", None)
    if tasks is None:
        tasks = request.app.state.verifying = set()
    return tasks


async def verify(request: Request) -> Response:
    runtime, refused = _guard(request, "verify")
    if refused is not None:
        return refused
    tasks = _verifying(request)
    mirror = runtime.mirror
    running = any(not t.done() for t in tasks) or await anyio.to_thread.run_sync(scrubbing, mirror)
    if running:
        last = await anyio.to_thread.run_sync(last_scrub, mirror)
        return JSONResponse(
            {"started": False, "reason": "a scrub pass is already running", "last": last},
            status_code=409,
        )

    async def run() -> None:
        try:
            if await scrub_once(runtime) is None:
                log.info("admin verify: skipped, another process is scrubbing this cache")
        except Exception:
            log.exception("admin verify failed")

    task = asyncio.create_task(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return JSONResponse({"started": True}, status_code=202)


async def refresh(request: Request) -> Response:
    project = _project(request)
    runtime, refused = _guard(request, f"refresh {project or '(invalid name)'}")
    if refused is not None:
        return refused
    if project is None:
        return error(400, "not a valid project name")
    mirror = runtime.mirror
    if mirror.offline:
        return error(409, "the proxy is offline: there is no upstream to refresh from")
    current = await mirror.stored_page(project)
    try:
        record = await mirror.refresh(project, current)
    except NotFound as exc:
        return error(404, str(exc))
    except UpstreamError as exc:
        return error(502, f"could not refresh {project}: {exc}")
    return JSONResponse(
        {
            "project": project,
            "serial": record.page.serial,
            "files": len(record.page.files),
            "fetched_at": record.fetched_at,
        }
    )


async def delete_project(request: Request) -> Response:
    project = _project(request)
    runtime, refused = _guard(request, f"delete {project or '(invalid name)'}")
    if refused is not None:
        return refused
    if project is None:
        return error(400, "not a valid project name")
    record = await runtime.mirror.stored_page(project)
    if record is None:
        return error(404, f"the cache holds no page of {project}")
    done = await runtime.mirror.delete(project, record)
    log.info(
        "admin delete %s: %d files (%d bytes) removed, %d pinned kept",
        project,
        done.files,
        done.bytes,
        done.kept_pinned,
    )
    return JSONResponse(
        {
            "deleted": project,
            "files_removed": done.files,
            "bytes_freed": done.bytes,
            "pinned_kept": done.kept_pinned,
        }
    )


async def action(request: Request) -> Response:
    """``/admin/forget/<project>`` and actions services registered under ``/admin/<name>``."""
    name: str = request.path_params["action"]
    project: str | None = request.path_params.get("project")
    # The names as asked, quoted: they reach the log before anything checks them.
    shown = repr(name) if project is None else f"{name!r} {project!r}"
    runtime, refused = _guard(request, shown)
    if refused is not None:
        return refused
    if name == "forget" and project is not None:
        if not is_valid_project_name(project):
            return error(400, "not a valid project name")
        normalized = normalize(project)
        await runtime.mirror.forget(normalized)
        return JSONResponse({"forgot": normalized})
    handler = runtime.actions.get(name)
    if handler is None or project is not None:
        return error(404, f"no admin action {name!r}")
    return JSONResponse(await handler(), status_code=202)
