"""Running the app under uvicorn: the guarded protocol (proxy.web.guard), one process or several.

Worker processes are spawned by uvicorn's supervisor (multiprocessing's spawn), which pickles
the server config to each child over a pipe it inherits. The Settings object travels in that
config as it is, with the function that builds the app from it (proxy.compose.build_app, named
by reference); nothing of them goes into the environment or onto a command line, where other
local processes could read a secret. The one process and the workers build the app the same
way, in ``load``.

The listening socket is bound before anything else starts (the app, its lifespan, workers),
so a port in use is one line and a non-zero exit, with no "startup complete" before it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from proxy import __version__
from proxy.errors import ProxyError
from proxy.logs import setup_logging
from proxy.settings import ENV_PREFIX, Settings
from proxy.web.guard import ConnectionLimits, GuardedProtocol, raise_open_file_limit
from proxy.web.shutdown import QuietMultiprocess, QuietServer

log = logging.getLogger("proxy")

_UNBUILT = "pypi-proxy:app-built-in-load"  # uvicorn wants an app argument; ``load`` replaces it

# The app from the settings, in each process. A module-level function: pickle sends it to
# spawned workers by its name, which a closure or a lambda has not.
AppFactory = Callable[[Settings], ASGIApp]


class ProxyConfig(uvicorn.Config):
    """uvicorn's config plus the settings and the function that builds the app from them.
    ``app`` is for tests that hold the app they serve; a real server builds it in ``load``."""

    def __init__(
        self,
        settings: Settings,
        build: AppFactory | None = None,
        app: Any = None,
        **overrides: Any,
    ) -> None:
        if (build is None) == (app is None):
            raise TypeError("ProxyConfig takes either build or app")
        self.settings = settings
        self.build = build
        self.connection_limits = ConnectionLimits.from_settings(settings)
        options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "workers": settings.workers,
            "http": GuardedProtocol,
            "ws": "none",  # no websockets here; an upgrade would leave the guard's counts
            "lifespan": "on",
            "log_level": settings.log_level,
            "access_log": False,  # ours (proxy.web.accesslog) when settings.access_log
            "log_config": None,
            "proxy_headers": False,
            "server_header": False,
            "timeout_graceful_shutdown": settings.shutdown_grace,
            # A worker that misses uvicorn's ping is killed with every transfer it serves; on a
            # loaded machine 5 s (the default) killed healthy workers mid-download.
            "timeout_worker_healthcheck": 30,
            "ssl_certfile": settings.tls_certfile,
            "ssl_keyfile": settings.tls_keyfile,
        }
        options.update(overrides)
        super().__init__(_UNBUILT if app is None else app, **options)

    def load(self) -> None:
        if self.app == _UNBUILT and self.build is not None:
            setup_logging(self.settings.log_level, self.settings.log_format)  # a worker has none
            self.app = self.build(self.settings)
        super().load()


class CannotListen(ProxyError):
    """The listening socket could not be had; the message is the one line to show."""


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket, bound now (inheritable: spawned workers accept on it too)."""
    shown = f"port {port} on {host}"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise CannotListen(f"cannot listen on {host}: no such host or address") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"{shown} is in use (choose another with --port)") from None
        if exc.errno == errno.EACCES:
            raise CannotListen(f"{shown}: permission denied (ports below 1024 need it)") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise CannotListen(f"cannot listen on {host}: not an address of this machine") from None
        raise CannotListen(f"cannot listen on {shown}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, build: AppFactory) -> int:
    """Run until stopped; the exit status. CannotListen when the port cannot be had."""
    sock = bind(settings.host, settings.port)
    log.info(
        "pypi-proxy %s listening on %s://%s:%d/simple/",
        __version__,
        "https" if settings.tls_certfile else "http",
        settings.host,
        sock.getsockname()[1],
    )
    limits = ConnectionLimits.from_settings(settings)
    fitted = limits.fitted(raise_open_file_limit())
    if fitted.max_connections < limits.max_connections:
        log.warning(
            "max_connections lowered to %d per process to fit the open-file limit "
            "(raise it with ulimit -n)",
            fitted.max_connections,
        )
    # Settings reach workers through the config; no child needs (or should see) these.
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        del os.environ[key]
    config = ProxyConfig(settings, build)
    if settings.workers > 1:
        QuietMultiprocess(config, [sock], settings.shutdown_grace).run()
        return 0
    server = QuietServer(config, settings.shutdown_grace)
    server.run(sockets=[sock])
    return 0 if server.started else 1
