"""What the upstream client takes and gives back: the limits of one answer, the answers
(a page, a part of a file) and the errors only it raises. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import UpstreamBadResponse, UpstreamUnavailable

PAGE_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


class CircuitOpen(UpstreamUnavailable):
    """The breaker for an origin is open: the request was not sent."""


class RangesIgnored(UpstreamBadResponse):
    """The server answered a Range request with the whole file (the caller falls back)."""


@dataclass(frozen=True, slots=True)
class PartialRead:
    start: int
    data: bytes
    total: int


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """What one upstream answer may cost: see max_page_size and friends in config.yaml."""

    max_page_size: int = 64 * 1024**2
    max_page_inflated: int = 128 * 1024**2
    deadline: float = 30.0
    max_redirects: int = 5


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str
    etag: str | None
    serial: int | None
    url: str  # final URL after redirects, credentials stripped, for resolving relative links

    @property
    def is_json(self) -> bool:
        return "json" in self.content_type
