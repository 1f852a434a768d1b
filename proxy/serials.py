"""The XML-RPC methods a mirror asks for, answered from this proxy's changelog (issue 12).

Pure: a request body in, a response body out, the changelog passed in. Only the methods
mirroring tools call are offered; anything else is a fault, as the public index answers.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from proxy.changelog import Changelog
from proxy.errors import ProxyError

MAX_CALL_SIZE = 64 * 1024  # a mirror's call is a few hundred bytes
# The public index's fault codes are not documented; these follow XML-RPC's own conventions.
NO_SUCH_METHOD = -32601
BAD_PARAMS = -32602
BAD_REQUEST = -32700


class BadCall(ProxyError):
    """Not an XML-RPC call at all: the route answers 400."""


def parse_call(body: bytes) -> tuple[str, tuple[Any, ...]]:
    if len(body) > MAX_CALL_SIZE:
        raise BadCall(f"an XML-RPC call of at most {MAX_CALL_SIZE} bytes is expected")
    try:
        params, method = xmlrpc.client.loads(body, use_builtin_types=True)
    except Exception as exc:  # expat errors, bad values: all the same to the client
        raise BadCall(f"not an XML-RPC call: {type(exc).__name__}") from None
    if not method:
        raise BadCall("not an XML-RPC call: no method name")
    return method, params


def _fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), allow_none=True).encode()


def _result(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()


def _serial(params: tuple[Any, ...]) -> int:
    if len(params) != 1 or isinstance(params[0], bool) or not isinstance(params[0], int):
        raise TypeError("one integer serial is expected")
    return int(params[0])


def answer(method: str, params: tuple[Any, ...], changelog: Changelog) -> bytes:
    """The response body for one call (blocking: reads the changelog)."""
    try:
        if method == "changelog_last_serial":
            if params:
                raise TypeError("no parameters are expected")
            return _result(changelog.last_serial())
        if method == "changelog_since_serial":
            return _result([c.row() for c in changelog.since(_serial(params))])
        if method == "list_packages_with_serial":
            if params:
                raise TypeError("no parameters are expected")
            return _result(changelog.packages_with_serial())
    except TypeError as exc:
        return _fault(BAD_PARAMS, f"{method}: {exc}")
    return _fault(NO_SUCH_METHOD, f"no such method: {method[:100]}")
