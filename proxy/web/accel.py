"""Cache hits handed to a front nginx (``accel_redirect``): the proxy still decides hit, miss,
auth and integrity, and answers a hit with an empty response whose ``X-Accel-Redirect`` names
the stored file under nginx's internal location aliasing the cache's ``files/`` directory.
nginx then sends the bytes itself (sendfile, its own Range and HEAD handling), which no Python
server can match for a hot large file. The configuration is in deploy/nginx.conf.

Only a file on this disk can be handed over (a hit from a bucket is served as before), and the
proxy checks the file still exists just before: an eviction between that check and nginx's
open makes nginx answer 404, which clients retry, never wrong bytes (nginx serves the path,
and a stored path's content never changes: the name is its sha256)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response

from proxy.filestore import StoredFile
from proxy.web.responses import FILE_CACHE_CONTROL


def accel_response(prefix: str, relative: str, stored: StoredFile) -> Response:
    return Response(
        status_code=200,
        headers={
            # nginx decodes the URI: quote every byte a file name may hold but a path may not.
            "X-Accel-Redirect": prefix + quote(relative, safe="/"),
            "Content-Type": "application/octet-stream",
            "ETag": f'"{stored.sha256}"',
            "Cache-Control": FILE_CACHE_CONTROL,
        },
    )
