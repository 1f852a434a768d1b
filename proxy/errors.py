"""The project's exceptions.

ProxyError
 +-- SettingsError          a setting is missing or invalid (names the key)
 |    +-- CacheUnusable         the cache directory cannot be made, written or opened
 +-- NotFound               the project or file does not exist (upstream said so, or offline)
 +-- UpstreamError          the upstream could not be used
 |    +-- UpstreamUnavailable   connection refused or reset, timeout, 5xx after retries
 |    +-- UpstreamBadResponse   an answer we cannot use: unparsable page, unexpected status
 |    +-- StalePage             the upstream's page is older than the serial we need
 |    +-- SuspectPage           a page we do not trust to replace the stored one (no serial
 |                              where ours had one, or every file gone without a newer serial)
 +-- IntegrityError         downloaded bytes do not match the hash the index promised
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
