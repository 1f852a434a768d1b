"""The upstream's HTTP clients: one connection pool each, with the proxy's timeouts, user agent
and (with a guard) checked addresses. Made per process by the runtime and handed to Upstream."""

from __future__ import annotations

import logging

import httpx

from proxy import __version__
from proxy.connect import guard_connections
from proxy.origins import AddressGuard
from proxy.settings import Settings

log = logging.getLogger(__name__)


def user_agent(settings: Settings) -> str:
    return (
        settings.user_agent
        or f"pypi-proxy/{__version__} (caching mirror; httpx/{httpx.__version__})"
    )


def make_http_client(
    settings: Settings, max_connections: int, guard: AddressGuard | None = None
) -> httpx.AsyncClient:
    """One connection pool. Pages and files get one each, so that downloads, however many and
    slow, never leave a page waiting for a connection. With ``guard``, every direct connection
    goes only to an address it has checked (see proxy/connect.py)."""
    verify: str | bool = settings.ca_bundle if settings.ca_bundle else True
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(20, max_connections),
        ),
        headers={"User-Agent": user_agent(settings)},
        # Redirects are followed by Upstream, one checked hop at a time.
        follow_redirects=False,
        verify=verify,
        trust_env=True,  # HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE, as operators expect
    )
    if guard is not None and not guard_connections(client, guard):
        log.warning("this httpx has no connection pool to guard; only URLs are checked")
    return client
