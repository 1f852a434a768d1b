"""/admin/<action>: state-changing actions, only with the admin token (Bearer or X-Admin-Token).

- ``POST /admin/forget/<project>``: drop a project's cached page (its files stay until evicted);
  every worker follows within about a second (the page's generation changes in the cache), and
  the next prefetch pass brings a mirrored project's page back
- ``POST /admin/<name>``: an action a service registered, e.g. ``prefetch`` to start a pass
"""

from __future__ import annotations

import hmac

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.names import is_valid_project_name, normalize
from proxy.runtime import Runtime
from proxy.web.responses import error


def _authorized(request: Request, token: str) -> bool:
    # X-Admin-Token leaves Authorization free for client authentication.
    header = request.headers.get("authorization", "")
    offered = [request.headers.get("x-admin-token", "")]
    if header.lower().startswith("bearer "):
        offered.append(header[7:])
    return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in offered)


async def action(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    token = runtime.settings.admin_token
    if token is None:
        return error(403, "admin actions are disabled: no admin_token is set")
    if not _authorized(request, token):
        return error(401, "admin token required", {"WWW-Authenticate": "Bearer"})
    name: str = request.path_params["action"]
    project: str | None = request.path_params.get("project")
    if name == "forget" and project is not None:
        if not is_valid_project_name(project):
            return error(400, "not a valid project name")
        normalized = normalize(project)
        runtime.index.forget(normalized)
        await anyio.to_thread.run_sync(runtime.storage.delete_page, normalized)
        return JSONResponse({"forgot": normalized})
    handler = runtime.actions.get(name)
    if handler is None or project is not None:
        return error(404, f"no admin action {name!r}")
    return JSONResponse(await handler(), status_code=202)
