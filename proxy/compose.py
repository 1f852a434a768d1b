"""The composition root: the app ``serve`` runs, built from settings in this one place.

It names its parts directly (the routes and lifespan of proxy.web.app, the prefetcher as a
service, the access log) instead of as ``module:attribute`` strings. Besides the command line,
it is the one module under proxy/ that imports prefetch: the core never does, so the
prefetcher stays a part that can be left out (tests/test_layers.py holds both to that).

Worker processes build their app with ``build_app`` too: uvicorn's supervisor pickles the
server config to each spawned worker, and with it the Settings object (so tuples stay tuples
and paths paths, no converter in between) and this function, which pickle names by reference.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from prefetch.service import prefetch_service
from proxy.settings import Settings
from proxy.storefactory import check_storage
from proxy.web.accesslog import AccessLog
from proxy.web.app import create_app
from proxy.web.server import serve as serve_app


def build_app(settings: Settings) -> ASGIApp:
    app: ASGIApp = create_app(settings, [prefetch_service])
    return AccessLog(app) if settings.access_log else app


def serve(settings: Settings) -> int:
    """Run the server until stopped; the exit status (CannotListen when the port is taken).
    An unusable cache directory or bucket is one line (CacheUnusable) before anything starts."""
    check_storage(settings)
    return serve_app(settings, build_app)
