"""Value objects for the simple API, independent of how a page was received or is sent."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"


@dataclass(frozen=True, slots=True)
class DistFile:
    """One file of a project as the index lists it. ``url`` is the upstream's absolute URL."""

    filename: str
    url: str
    hashes: Mapping[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False
    # PEP 658/714: False, True (no hash known) or a hashes mapping.
    core_metadata: bool | Mapping[str, str] = False
    size: int | None = None
    upload_time: str | None = None
    provenance: str | None = None
    gpg_sig: bool | None = None
    # JSON keys this version does not model, passed through unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")

    @property
    def variant(self) -> str:
        """Tells apart entries that share a filename on one page (re-uploads on some indexes):
        the sha256 when the index gives one, else a digest of the upstream URL."""
        return self.sha256 or hashlib.sha256(self.url.encode()).hexdigest()[:32]

    @property
    def has_metadata(self) -> bool:
        return self.core_metadata is not False

    @property
    def lacks_wheel_metadata(self) -> bool:
        """A wheel its index gives no PEP 658 metadata for: the proxy can read it out of the
        wheel itself (proxy.metasynth)."""
        return self.filename.endswith(".whl") and self.core_metadata is False

    @property
    def metadata_sha256(self) -> str | None:
        if isinstance(self.core_metadata, Mapping):
            return self.core_metadata.get("sha256")
        return None


@dataclass(frozen=True, slots=True)
class ProjectPage:
    name: str
    files: tuple[DistFile, ...]
    api_version: str = "1.1"
    serial: int | None = None
    versions: tuple[str, ...] | None = None
    project_status: Mapping[str, str] | None = None
    # Top-level JSON keys not modelled (tracks, alternate-locations, ...), passed through.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProjectListing:
    """The root index: project names as the upstream spells them, with serials when known."""

    projects: tuple[tuple[str, int | None], ...]
    api_version: str = "1.1"
    serial: int | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """One pre-rendered representation: raw and gzip bytes and its entity tag (without quotes)."""

    raw: bytes
    gz: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class Rendered:
    json: Body
    html: Body


# The layout of the records below as pickled into the cache. A record written by a version
# with another layout (or one that cannot be unpickled at all) is never used: the storage layer
# reports it as unreadable, and the page is fetched again (online) or reported (offline).
# Records from before this field existed have no ``format`` attribute and are layout 1.
RECORD_FORMAT = 1


@dataclass(slots=True)
class PageRecord:
    """What the cache keeps for one project: the page, how fresh it is, and its rendered bytes."""

    project: str
    page: ProjectPage
    rendered: Rendered
    fetched_at: float
    upstream_etag: str | None = None
    by_filename: dict[str, DistFile] = field(default_factory=dict)
    # The allowed_file_hosts the page was filtered with; another setting means refetch it.
    allowed_hosts: tuple[str, ...] = ()
    format: int = RECORD_FORMAT

    def __post_init__(self) -> None:
        if not self.by_filename:
            # The first entry of a name wins; later ones are reached by their variant URL.
            for f in self.page.files:
                self.by_filename.setdefault(f.filename, f)


@dataclass(slots=True)
class RootRecord:
    listing: ProjectListing
    rendered: Rendered
    fetched_at: float
    upstream_etag: str | None = None
    format: int = RECORD_FORMAT
