"""What the mirror (``proxy.cache``) answers: a page, the root listing, or one of the ways a
file request can go. Plain values; the web layer turns each into a response, the mirror counts
them (see its docstring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from proxy.filestore import StoredFile
from proxy.models import PageRecord, Rendered, RootRecord


@dataclass(frozen=True, slots=True)
class PageAnswer:
    record: PageRecord
    rendered: Rendered  # offline: only the files the mirror can serve are listed
    outcome: str  # hit, miss or stale

    @property
    def serial(self) -> int | None:
        return self.record.page.serial


@dataclass(frozen=True, slots=True)
class RootAnswer:
    record: RootRecord
    outcome: str

    @property
    def serial(self) -> int | None:
        return self.record.listing.serial


@dataclass(frozen=True, slots=True)
class Hit:
    """Verified bytes on an open descriptor the receiver owns (closes once sent)."""

    fd: int
    sha256: str
    outcome: str  # "hit", or "miss" for a HEAD or Range answered after the download
    sent: Callable[[int], None]  # call with the bytes sent: counted here


@dataclass(frozen=True, slots=True)
class InMemory:
    """A hit from the in-memory tier (``proxy.memfiles``): the verified bytes of the stored
    file whose modification time is ``mtime`` (for Last-Modified)."""

    data: bytes
    sha256: str
    mtime: float
    sent: Callable[[int], None]
    outcome: str = "hit"


@dataclass(frozen=True, slots=True)
class Handover:
    """A hit a front server sends itself (``accel_redirect``): where the stored file lies
    under the files directory it aliases. Checked to exist just now; its bytes are counted."""

    relative: str
    stored: StoredFile
    outcome: str = "hit"


@dataclass(frozen=True, slots=True)
class Redirect:
    """A hit the client fetches from the shared bucket itself (``s3_redirect``): a presigned
    URL, good for a while."""

    url: str
    sha256: str
    outcome: str = "hit"


@dataclass(frozen=True, slots=True)
class Stream:
    """A download being read while it grows; ``chunks`` ends with an error rather than with
    bytes that fail verification."""

    chunks: AsyncIterator[bytes]
    total: int | None
    sha256: str | None
    sent: Callable[[int], None]  # call once when the answer ends, with the bytes sent
    outcome: str = "miss"


@dataclass(frozen=True, slots=True)
class SizeOnly:
    """HEAD on a miss answered from the size the page gives, no byte fetched. ``ranges``:
    a Range will be served (false for a file too big to keep, which is streamed whole)."""

    size: int
    sha256: str | None
    ranges: bool = False
    outcome: str = "miss"


@dataclass(frozen=True, slots=True)
class Partial:
    """A Range on a miss passed through to the upstream while the fill goes on: bytes
    ``start`` to ``start + len(data)`` of a file of ``total`` bytes, never its last byte."""

    data: bytes
    start: int
    total: int
    sha256: str | None
    sent: Callable[[int], None]
    outcome: str = "miss"


RefusalKind = Literal["not_found", "unavailable", "upstream_failed"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a file cannot be had: ``not_found`` (not listed, not upstream, or offline and not
    held), ``unavailable`` (held but unusable now), ``upstream_failed`` (the upstream erred)."""

    kind: RefusalKind
    message: str


FileAnswer = Hit | InMemory | Handover | Redirect | Stream | SizeOnly | Partial | Refusal


@dataclass(frozen=True, slots=True)
class Figures:
    """The counters every process on this cache added up (this one's included), and what the
    mirror holds: the numbers /stats, /metrics and the status page show."""

    counters: dict[str, int]
    cache: dict[str, int]  # projects, files, bytes
    upstream_errors_by_origin: dict[str, int]
    top_projects: list[dict[str, Any]]
    last_hour: list[dict[str, int]]
    uptime_seconds: float
