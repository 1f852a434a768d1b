"""Which ``PYPI_PROXY_*`` variables are settings: all of them but Kubernetes service links.

Kubernetes gives every pod service links for each Service in its namespace (unless the pod sets
``enableServiceLinks: false``). A Service named ``pypi-proxy``, or ``pypi-proxy-<anything>``,
yields variables with the settings' own prefix:

    PYPI_PROXY[_<X>]_SERVICE_HOST=10.0.0.1
    PYPI_PROXY[_<X>]_SERVICE_PORT=8080          and _SERVICE_PORT_<PORTNAME>=8080
    PYPI_PROXY[_<X>]_PORT=tcp://10.0.0.1:8080
    PYPI_PROXY[_<X>]_PORT_8080_TCP=tcp://10.0.0.1:8080   and _PROTO, _PORT, _ADDR

None of them is a setting, and ``PYPI_PROXY_PORT`` even collides with ``port``. They are
skipped (one debug line names them); any other variable with the prefix must be a setting, so
a typo still stops the server with its name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping

log = logging.getLogger(__name__)

_LINK_NAME = re.compile(
    r"(?:^|_)(?:SERVICE_HOST|SERVICE_PORT(?:_\w+)?|PORT_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)$"
)
_LINK_VALUE = re.compile(r"^(?:tcp|udp|sctp)://", re.IGNORECASE)
# Settings a service link can collide with (PYPI_PROXY_PORT); no link ever holds a host alone,
# but a tcp:// value is no host either.
_ADDRESS_SETTINGS = ("port", "host")


def is_service_link(key: str, value: str, known: Collection[str]) -> bool:
    """``key`` is the variable's name without the prefix, as Kubernetes writes it (upper case)."""
    name = key.lower()
    if name in known or name.startswith("prefetch__"):
        return name in _ADDRESS_SETTINGS and bool(_LINK_VALUE.match(value))
    if _LINK_NAME.search(key.upper()):
        return True
    return key.upper().endswith("PORT") and bool(_LINK_VALUE.match(value))


def settings_from_environment(
    env: Mapping[str, str], prefix: str, known: Collection[str], skip: Collection[str] = ()
) -> dict[str, str]:
    """The variables starting with ``prefix`` that are meant as settings, keyed by setting name
    (lower case, prefix removed); ``skip`` names variables read elsewhere (the config file's)."""
    found: dict[str, str] = {}
    links: list[str] = []
    for variable, value in env.items():
        if not variable.startswith(prefix) or variable in skip:
            continue
        key = variable[len(prefix) :]
        if is_service_link(key, value, known):
            links.append(variable)
        else:
            found[key.lower()] = value
    if links:
        log.debug("ignored Kubernetes service links: %s", ", ".join(sorted(links)))
    return found
