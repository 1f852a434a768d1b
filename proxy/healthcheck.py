"""``pypi-proxy health``: ask the running server's /health, found from the settings it reads.

For container health checks: the scheme comes from ``tls_certfile``, the port and host from the
same defaults, config file (``--config`` or ``PYPI_PROXY_CONFIG``) and ``PYPI_PROXY_*``
variables that ``serve`` reads, so a health check never hard-codes 8080 or http. Flags given to
``serve`` itself are not visible here: set what the health check must follow in the config
file or the environment.

Exit status: 0 when /health answers 200, 1 otherwise (one line on stderr says why).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import ssl
import sys

from proxy.settings import Settings

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
# Where to reach a server that listens on every address.
_ANY = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=4.0, help="seconds to wait for the answer (default 4)"
    )


def target(settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of the server these settings start."""
    scheme = "https" if settings.tls_certfile else "http"
    host = _ANY.get(settings.host.strip(), settings.host.strip())
    return scheme, host, settings.port


def _tls_context(certfile: str) -> ssl.SSLContext:
    # The certificate names the public host, not the loopback address asked here: trust exactly
    # the server's own certificate (even a CA-issued leaf) and skip only the name check.
    context = ssl.create_default_context(cafile=certfile)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def check(settings: Settings, timeout: float) -> tuple[bool, str]:
    """Whether /health answered 200, and one line saying what was asked and what came back."""
    scheme, host, port = target(settings)
    shown = f"[{host}]" if _is_ipv6(host) else host
    url = f"{scheme}://{shown}:{port}/health"
    connection: http.client.HTTPConnection
    try:
        if scheme == "https":
            assert settings.tls_certfile is not None
            connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=_tls_context(settings.tls_certfile)
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", "/health", headers={"User-Agent": "pypi-proxy-health"})
            status = connection.getresponse().status
        finally:
            connection.close()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return False, f"{url}: {str(exc) or type(exc).__name__}"
    return status == 200, f"{url}: {status}"


def run(settings: Settings, timeout: float) -> int:
    ok, line = check(settings, timeout)
    print(f"{'healthy' if ok else 'unhealthy'}: {line}", file=sys.stdout if ok else sys.stderr)
    return EXIT_HEALTHY if ok else EXIT_UNHEALTHY


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
