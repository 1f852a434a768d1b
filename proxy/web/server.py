"""Running the app under uvicorn: the guarded protocol (proxy.web.guard), one process or several.

Worker processes are spawned by uvicorn's supervisor (multiprocessing's spawn), which pickles
the server config to each child over a pipe it inherits. The settings travel in that config
as plain data, rebuilt in the child through the same converters as every other source; nothing
of them goes into the environment or onto a command line, where other local processes could
read a secret. The one process and the workers build the app the same way, in ``load``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from proxy.logs import setup_logging
from proxy.settings import ENV_PREFIX, Settings, settings_from_mapping, settings_to_mapping
from proxy.web.app import create_app, load_services
from proxy.web.guard import ConnectionLimits, GuardedProtocol, raise_open_file_limit

log = logging.getLogger("proxy")

_UNBUILT = "pypi-proxy:app-built-in-load"  # uvicorn wants an app argument; ``load`` replaces it


class ProxyConfig(uvicorn.Config):
    """uvicorn's config plus the settings (as plain data) and the names of the services.
    ``app`` is for tests that hold the app they serve; a real server builds it in ``load``."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] = (),
        app: Any = None,
        **overrides: Any,
    ) -> None:
        self.settings_data = settings_to_mapping(settings)
        self.services = ",".join(services)
        self.connection_limits = ConnectionLimits.from_settings(settings)
        options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "workers": settings.workers,
            "http": GuardedProtocol,
            "ws": "none",  # no websockets here; an upgrade would leave the guard's counts
            "lifespan": "on",
            "log_level": settings.log_level,
            "access_log": settings.access_log,
            "log_config": None,
            "proxy_headers": False,
            "server_header": False,
            "timeout_graceful_shutdown": 10,
            # A worker that misses uvicorn's ping is killed with every transfer it serves; on a
            # loaded machine 5 s (the default) killed healthy workers mid-download.
            "timeout_worker_healthcheck": 30,
            "ssl_certfile": settings.tls_certfile,
            "ssl_keyfile": settings.tls_keyfile,
        }
        options.update(overrides)
        super().__init__(_UNBUILT if app is None else app, **options)

    def load(self) -> None:
        if self.app == _UNBUILT:
            settings = settings_from_mapping(self.settings_data)
            setup_logging(settings.log_level)  # a spawned worker starts with no logging
            self.app = create_app(settings, load_services(self.services))
        super().load()


def serve(settings: Settings, services: Sequence[str] = ()) -> int:
    """Run until stopped; the exit status."""
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
    config = ProxyConfig(settings, services)
    server = uvicorn.Server(config)
    if settings.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server.run()
    return 0 if server.started else 1
