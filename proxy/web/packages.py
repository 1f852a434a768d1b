"""Files under ``/packages/ab/cd/<rest of the sha256>/<filename>``: the layout the JSON API's
URLs use, so that tools which map a file URL to a local path (bandersnatch) can mirror this
proxy. The path names the bytes (their sha256) and the file; the project comes from the
filename, and the file is then served exactly as its ``/files/`` URL would be: only files
listed on the project's page, verified the same way."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from proxy.names import is_safe_filename, is_sha256, project_of
from proxy.web.files import serve_file
from proxy.web.responses import error


async def serve_package(request: Request) -> Response | ASGIApp:
    params = request.path_params
    sha = f"{params['a']}{params['b']}{params['rest']}"
    filename: str = params["filename"]
    if not is_sha256(sha) or not is_safe_filename(filename):
        return error(404, "not a file of this mirror")
    project = project_of(filename)
    if project is None:
        return error(404, f"cannot tell which project {filename} belongs to")
    request.scope["path_params"] = {"project": project, "variant": sha, "filename": filename}
    return await serve_file(request)
