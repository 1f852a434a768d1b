"""Where the proxy may send a request: origins (scheme, host, port) and the addresses behind them.

A page the upstream serves is input from outside, and so is every redirect it answers. Two
checks stand between it and a request:

- the origin (scheme, host *and* port) must be the index's own or match an operator's pattern
  in ``allowed_file_hosts`` (with no patterns, any http(s) origin passes this check);
- every address the host resolves to must be public, unless it is the very address and port the
  index itself answers on, or lies in a network the operator listed in
  ``allowed_private_networks``. Loopback, private, link-local (cloud metadata), shared and
  reserved addresses are refused before a connection is made.

Parsing patterns and judging addresses are pure; only ``AddressGuard`` resolves names, both
for the URL check (``check``) and at connect time (``connectable``, see proxy/connect.py).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

import anyio

from proxy.errors import UpstreamBadResponse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TTL = 30.0
RESOLVE_CACHE = 1024


class Refused(UpstreamBadResponse):
    """A URL the proxy will not fetch: an origin not allowed, or an internal address."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin | None:
    """The origin of an http(s) URL; None for anything else (or a port that is not a number)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    return Origin(scheme, parts.hostname.lower(), port)


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """``[scheme://]host-glob[:port]``: no scheme means http or https; no port means the
    scheme's default port; ``:*`` means any port."""

    scheme: str | None
    host: str
    port: int | None  # None: the default port of the URL's scheme
    any_port: bool = False

    def matches(self, origin: Origin) -> bool:
        if self.scheme is not None and origin.scheme != self.scheme:
            return False
        if not fnmatchcase(origin.host, self.host):
            return False
        if self.any_port:
            return True
        wanted = self.port if self.port is not None else DEFAULT_PORTS[origin.scheme]
        return origin.port == wanted


@functools.lru_cache(maxsize=256)
def parse_pattern(text: str) -> OriginPattern:
    """An ``allowed_file_hosts`` entry; ValueError says what is wrong with it."""
    raw = text.strip().lower()
    scheme: str | None = None
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{text!r}: only http:// or https:// may be given")
    any_port = raw.endswith(":*")
    if any_port:
        raw = raw[:-2]
    try:
        parts = urlsplit("//" + raw)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: not a host[:port]") from None
    host = parts.hostname or ""
    if not host or parts.path or parts.query or parts.username is not None:
        raise ValueError(f"{text!r}: expected [scheme://]host[:port], such as files.example.org")
    return OriginPattern(scheme, host, port, any_port)


def host_allowed(url: str, index_url: str, allowed: Sequence[str]) -> bool:
    """Files come from the index's own origin, or from origins the operator listed (globs)."""
    origin = origin_of(url)
    if origin is None:
        return False
    if origin == origin_of(index_url):
        return True
    return any(parse_pattern(p).matches(origin) for p in allowed)


class OriginPolicy:
    """The origin check for every URL and every redirect hop (the address check is separate)."""

    def __init__(self, index_url: str, allowed: Sequence[str] = ()) -> None:
        self.index = origin_of(index_url)
        self._patterns = tuple(parse_pattern(p) for p in allowed)

    def allows(self, origin: Origin) -> bool:
        if origin == self.index:
            return True
        if not self._patterns:
            return True
        return any(p.matches(origin) for p in self._patterns)


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, shared, reserved, multicast or unspecified."""
    address = _plain(address)
    return not address.is_global or address.is_multicast


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (empty when it does not resolve here)."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    found: list[IPAddress] = []
    for info in infos:
        address = literal_address(str(info[4][0]).split("%", 1)[0])
        if address is not None:
            found.append(address)
    return found


class AddressGuard:
    """Refuses, before any connection, a URL whose host is or resolves to an internal address.

    "The upstream itself is there" is taken literally: an internal address passes only when it
    is, with the same port, one of the addresses the index's own host (or another endpoint of
    the upstream the operator set, ``also_own``) resolves to.
    """

    def __init__(
        self,
        index_url: str,
        allowed_networks: Sequence[str] = (),
        *,
        also_own: Sequence[str] = (),
        resolver: Resolver = resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The upstream's own origins: the index, and endpoints the operator set (XML-RPC).
        self._own = tuple(o for o in map(origin_of, (index_url, *also_own)) if o is not None)
        self._networks = parse_networks(allowed_networks)
        self._resolve = resolver
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = literal_address(host)
        if literal is not None:
            return [literal]
        key = (host, port)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < RESOLVE_TTL:
            return cached[1]
        found = await self._resolve(host, port)
        if len(self._cache) >= RESOLVE_CACHE:
            self._cache.clear()
        self._cache[key] = (now, found)
        return found

    def _permitted(self, address: IPAddress, port: int, index: set[tuple[IPAddress, int]]) -> bool:
        plain = _plain(address)
        if not is_internal(plain):
            return True
        if (plain, port) in index:
            return True
        return any(plain in network for network in self._networks)

    async def connectable(self, host: str, port: int, shown: str | None = None) -> list[IPAddress]:
        """The addresses ``host`` resolves to, all of which may be connected to; Refused if any
        may not. Empty when the name does not resolve here: such a host cannot be connected to
        directly, and through an outbound proxy (HTTPS_PROXY) the proxy resolves it."""
        host = host.lower().strip("[]")
        addresses = await self._addresses(host, port)
        if all(not is_internal(a) for a in addresses):
            return addresses
        index: set[tuple[IPAddress, int]] = set()
        for own in self._own:
            index.update((_plain(a), own.port) for a in await self._addresses(own.host, own.port))
        for address in addresses:
            if not self._permitted(address, port, index):
                raise Refused(
                    f"refused {shown or host}: {host} is an internal address ({_plain(address)})"
                    " and not the upstream's own; see allowed_private_networks"
                )
        return addresses

    async def check(self, origin: Origin, shown: str) -> None:
        """Raise Refused unless every address of ``origin`` may be connected to."""
        await self.connectable(origin.host, origin.port, shown)
