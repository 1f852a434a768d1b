"""Wheels whose metadata could not be made, remembered for a while (issue 10), so that a
client asking again and again for ``<wheel>.metadata`` (pip retries a 502; a resolver asks once
per run) costs the upstream nothing more: no ranged reads, no whole download attempted again.

Remembered in the cache's diskcache (every worker on this cache sees them), keyed by the
wheel's sha256 (or its URL and size when the page gives no hash), so a wheel replaced upstream
under the same name is tried afresh. Each entry expires after ``ttl`` seconds (the page's
freshness: a page fetched again may list other files, an upstream may mend one); expired
entries are culled by diskcache as it writes, so what is held stays bounded by the wheels
listed on the pages held, over one ``ttl``. Only what the proxy itself decided is remembered
(no METADATA in the verified wheel, the whole wheel not to be had): an upstream error on the
way is not, and a wheel stored since is read as usual.
"""

from __future__ import annotations

from proxy.errors import UpstreamUnavailable
from proxy.models import DistFile
from proxy.storage import Storage
from proxy.wheelmeta import NoMetadata

PREFIX = "metadata-failed:"
MIN_TTL = 60.0

Failure = NoMetadata | UpstreamUnavailable


def _key(entry: DistFile) -> str:
    if entry.sha256 is not None:
        return PREFIX + entry.sha256
    return f"{PREFIX}url:{entry.size}:{entry.url}"


class MetadataFailures:
    """Blocking (diskcache): call from a worker thread."""

    def __init__(self, storage: Storage, ttl: float) -> None:
        self._storage = storage
        self.ttl = max(ttl, MIN_TTL)

    def recall(self, entry: DistFile) -> Failure | None:
        """The failure remembered for ``entry``'s wheel, as the error to raise again."""
        value = self._storage.index.get(_key(entry))
        if not (isinstance(value, tuple) and len(value) == 2):
            return None
        kind, message = value
        if not isinstance(message, str):
            return None
        if kind == "no_metadata":
            return NoMetadata(message)
        if kind == "unavailable":
            return UpstreamUnavailable(message)
        return None

    def remember(self, entry: DistFile, failure: Failure) -> None:
        kind = "no_metadata" if isinstance(failure, NoMetadata) else "unavailable"
        self._storage.index.set(_key(entry), (kind, str(failure)), expire=self.ttl)
