"""PEP 691 content negotiation: pick the representation of a simple-API page a client asked for."""

from __future__ import annotations

import functools

from proxy.models import HTML_V1, JSON_V1, TEXT_HTML

# Ties (equal q, equally specific match) go to the first here: a bare */* (curl, a browser's
# fallback) gets plain HTML, application/* gets JSON.
_PREFERENCE = (TEXT_HTML, JSON_V1, HTML_V1)
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
MAX_ACCEPT_LENGTH = 4096


def _parse(accept: str) -> list[tuple[str, float]]:
    entries: list[tuple[str, float]] = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if media.count("/") != 1:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            entries.append((_ALIASES.get(media, media), q))
    return entries


def _specificity(pattern: str, candidate: str) -> int:
    if pattern == candidate:
        return 3
    major, _, minor = pattern.partition("/")
    if minor == "*" and candidate.startswith(major + "/"):
        return 2
    if pattern == "*/*":
        return 1
    return 0


@functools.lru_cache(maxsize=1024)  # clients send a handful of distinct headers
def choose(accept: str | None, format_param: str | None = None) -> str | None:
    """The media type to answer with, or None when nothing acceptable can be served (406).

    ``?format=`` (PEP 691) takes precedence over the header; no header at all means any type.
    """
    wanted = format_param if format_param else accept
    if not wanted or not wanted.strip():
        return TEXT_HTML
    if len(wanted) > MAX_ACCEPT_LENGTH:
        return None
    entries = _parse(wanted)
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for rank, candidate in enumerate(_PREFERENCE):
        # The most specific matching entry decides the candidate's q (RFC 9110, 12.5.1).
        match_q, match_spec = 0.0, 0
        for pattern, q in entries:
            spec = _specificity(pattern, candidate)
            if spec > match_spec:
                match_q, match_spec = q, spec
        if match_spec == 0 or match_q <= 0.0:
            continue
        key = (match_q, match_spec, -rank)
        if best is None or key > best:
            best, chosen = key, candidate
    return chosen
