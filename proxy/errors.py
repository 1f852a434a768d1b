"""The project's exceptions: every one it raises is a ProxyError (tests/test_errors.py checks
each public exception class in proxy/ and prefetch/). Those defined next to the one module that
raises them are marked with that module.

ProxyError
 +-- SettingsError          a setting is missing or invalid (names the key)
 |    +-- CacheUnusable         the cache directory cannot be made, written or opened
 +-- NotFound               the project or file does not exist (upstream said so, or offline)
 +-- RecordUnreadable       offline, a stored page this version cannot read
 +-- UpstreamError          the upstream could not be used
 |    +-- UpstreamUnavailable   connection refused or reset, timeout, 5xx after retries
 |    |    +-- CircuitOpen          (proxy.upstreamtypes) the origin's breaker is open: not sent
 |    +-- UpstreamBadResponse   an answer we cannot use: unparsable page, unexpected status
 |    |    +-- PageTooLarge         (proxy.bounded) more than a page may be, sent or inflated
 |    |    +-- Refused              (proxy.origins) an origin not allowed, an internal address
 |    |    +-- RangesIgnored        (proxy.upstreamtypes) a Range answered with the whole file
 |    +-- StalePage             the upstream's page is older than the serial we need
 |    +-- SuspectPage           a page we do not trust to replace the stored one (no serial
 |    |                         where ours had one, or every file gone without a newer serial)
 |    +-- NoSerials             (prefetch.changes) the root index carries no serials
 |    +-- XmlRpcRefused         (prefetch.xmlrpc) the upstream will not answer XML-RPC
 +-- IntegrityError         downloaded bytes do not match the hash the index promised
 |    +-- FillFailed            a reader's transfer is cut: its download gave no verified bytes
 +-- Unsatisfiable          a Range header that cannot be served (416)
 +-- HtpasswdError          an htpasswd file that cannot be read or parsed
 +-- StoreUnavailable       the object store failed or cannot be reached (also an OSError, so
 |                          whoever reads a stored file treats it like a disk that failed)
 +-- NoMetadata             (proxy.wheelmeta) not a wheel whose metadata can be read
 +-- BadCall                (proxy.serials) a POST body that is no XML-RPC call (400)
 +-- CannotListen           (proxy.web.server) the listening socket could not be had
 +-- SyncFailed             (prefetch.sync) one project could not be brought up to date
 +-- AlreadyRunning         (prefetch.runner) another prefetch pass runs on this cache
 +-- LeaseLost              (proxy.lease) a lease this process held was taken or expired
"""

from __future__ import annotations


class ProxyError(Exception):
    pass


class SettingsError(ProxyError):
    pass


class CacheUnusable(SettingsError):
    pass


class NotFound(ProxyError):
    pass


class RecordUnreadable(ProxyError):
    """Offline, a stored page this version cannot read (another layout): reported, not served."""


class UpstreamError(ProxyError):
    pass


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamBadResponse(UpstreamError):
    pass


class IntegrityError(ProxyError):
    pass


class StalePage(UpstreamError):
    pass


class SuspectPage(UpstreamError):
    pass


class FillFailed(IntegrityError):
    """The download did not produce verified bytes; readers must abort their transfer. The
    server's log filter knows it by ``quiet_abort``: it is logged by us, not as a crash."""

    quiet_abort = True


class Unsatisfiable(ProxyError):
    """Answer 416 with ``Content-Range: bytes */size``."""


class HtpasswdError(ProxyError):
    """The file cannot be used at all (unreadable, not UTF-8): nobody logs in through it."""


class StoreUnavailable(ProxyError, OSError):
    """An object store request failed. The message names the operation and the key, never the
    endpoint or a credential (the store's own messages carry URLs, so they are not passed on)."""
