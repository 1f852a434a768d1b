"""The ASGI application: routes, and the lifespan that makes and closes the per-process parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from proxy.access import Access
from proxy.runtime import Runtime
from proxy.scrub import scrub_service
from proxy.settings import Settings
from proxy.web import admin, api, errorring, files, jsonapi, ops, packages, pages, serials, status
from proxy.web.auth import RequireAuth
from proxy.web.counting import CountRequests
from proxy.web.fastpath import FastPages
from proxy.web.limits import RequestLimits

# An optional part that lives as long as the server (the prefetch scheduler): it is handed the
# runtime and may add figures to /stats and admin actions. The core never imports one:
# proxy.compose hands them in.
Service = Callable[[Runtime], AbstractAsyncContextManager[None]]


def create_app(settings: Settings, services: Sequence[Service] = ()) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        try:
            async with AsyncExitStack() as stack:
                app.state.errors = stack.enter_context(errorring.keep_errors())
                if settings.scrub_interval:
                    await stack.enter_async_context(scrub_service(runtime, settings.scrub_interval))
                for service in services:
                    await stack.enter_async_context(service(runtime))
                yield
        finally:
            await runtime.close()

    routes = [
        Route("/", status.status_page, methods=["GET", "HEAD"]),
        Route("/health", ops.health, methods=["GET", "HEAD"]),
        Route("/stats", ops.stats, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/robots.txt", ops.robots, methods=["GET"]),
        Route("/simple", pages.root_redirect, methods=["GET", "HEAD"]),
        Route("/simple/", pages.root, methods=["GET", "HEAD"]),
        Route("/simple/{project}", pages.project, methods=["GET", "HEAD"]),
        Route("/simple/{project}/", pages.project, methods=["GET", "HEAD"]),
        Route("/files/{project}/{filename}", files.serve_file, methods=["GET", "HEAD"]),
        Route("/files/{project}/{variant}/{filename}", files.serve_file, methods=["GET", "HEAD"]),
        Route(
            "/packages/{a}/{b}/{rest}/{filename}", packages.serve_package, methods=["GET", "HEAD"]
        ),
        Route("/pypi", serials.xmlrpc, methods=["POST"]),
        Route("/pypi/{project}/json", jsonapi.document, methods=["GET", "HEAD"]),
        Route("/pypi/{project}/{version}/json", jsonapi.document, methods=["GET", "HEAD"]),
        Route("/api/projects", api.projects, methods=["GET"]),
        Route("/api/projects/{project}", api.project, methods=["GET"]),
        Route("/admin/prefetch", admin.prefetch, methods=["POST"]),
        Route("/admin/verify", admin.verify, methods=["POST"]),
        Route("/admin/projects/{project}/refresh", admin.refresh, methods=["POST"]),
        Route("/admin/projects/{project}", admin.delete_project, methods=["DELETE"]),
        Route("/admin/{action}", admin.action, methods=["POST"]),
        Route("/admin/{action}/{project}", admin.action, methods=["POST"]),
    ]
    access = Access(
        Path(settings.auth_htpasswd) if settings.auth_htpasswd else None, settings.auth_tokens
    )
    middleware = [Middleware(CountRequests), Middleware(RequestLimits)]  # counting outermost
    if access.enabled:
        middleware.append(
            Middleware(
                RequireAuth,
                access=access,
                check_threads=settings.auth_check_threads,
                max_pending=settings.auth_max_pending,
            )
        )
    middleware.append(Middleware(FastPages))  # innermost: after limits and authentication
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
