"""URLs with their credentials taken out: pure, so that whatever shows or logs a URL (pages,
stats, log lines, error messages) can use it without depending on the upstream client."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL with any user name and password replaced, safe for logs, pages and stats."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def strip_credentials(url: str) -> str:
    """The URL with no user name or password at all (the upstream client sends them as auth)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return redact(url).replace("***@", "", 1)
