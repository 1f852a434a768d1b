"""Selection by author or maintainer: ``prefetch.authors`` and ``prefetch.maintainers``.

Each wanted entry is a name or an e-mail address, or a glob of one (``*@example.org``), matched
case-insensitively against the upstream's legacy JSON API (``/pypi/<project>/json``):
``authors`` against ``info.author`` and ``info.author_email``, ``maintainers`` against
``info.maintainer`` and ``info.maintainer_email``. A field matches as a whole, or by any one
of the people it lists (``Jane Doe, John Roe``; ``"Jane Doe" <jane@example.org>``: the name
and the address each count), so "Jane" does not select every Janet.

The candidates are the other selection (projects, requirements) when there is one, else every
project the upstream's root index lists: then each pass asks the JSON API once per project of
the index, so give a list where the index is large. A project whose document cannot be had
(the upstream unavailable) fails the pass rather than leave the selection: a dropped name
would read as a project to remove. One that is absent, or whose document is malformed, simply
does not match.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from email.utils import getaddresses
from fnmatch import fnmatchcase
from typing import Any

import anyio

from proxy.errors import NotFound, UpstreamBadResponse, UpstreamError, UpstreamUnavailable
from proxy.jsonapi import upstream_url
from proxy.names import normalize
from proxy.parse import parse_root_html, parse_root_json
from proxy.settings import Settings
from proxy.upstream import Upstream

log = logging.getLogger("prefetch")

_FIELDS = {"authors": ("author", "author_email"), "maintainers": ("maintainer", "maintainer_email")}


def _people_in(field: object) -> set[str]:
    """What one info field can be matched by: itself, and each name and address it lists."""
    if not isinstance(field, str) or not field.strip():
        return set()
    found = {field.strip().casefold()}
    for name, address in getaddresses([field]):
        found |= {part.strip().casefold() for part in (name, address) if part.strip()}
    found |= {part.strip().casefold() for part in field.split(",") if part.strip()}
    return found


def _matches(wanted: Iterable[str], candidates: set[str]) -> bool:
    return any(fnmatchcase(c, w.casefold()) for w in wanted for c in candidates)


def matches(info: Mapping[str, Any], authors: Iterable[str], maintainers: Iterable[str]) -> bool:
    """Whether a JSON API ``info`` names one of the wanted authors or maintainers."""
    for wanted, fields in ((authors, _FIELDS["authors"]), (maintainers, _FIELDS["maintainers"])):
        candidates: set[str] = set()
        for key in fields:
            candidates |= _people_in(info.get(key))
        if _matches(wanted, candidates):
            return True
    return False


def _info(body: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UpstreamBadResponse(f"not valid JSON: {exc}") from None
    info = data.get("info") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise UpstreamBadResponse("no info object")
    return info


async def _index_names(upstream: Upstream) -> set[str]:
    fetched = await upstream.get_page("")
    if fetched is None:  # no ETag was sent: a 304 here is the upstream's mistake
        raise UpstreamBadResponse("the upstream answered 304 for its root index")
    listing = parse_root_json(fetched.body) if fetched.is_json else parse_root_html(fetched.body)
    return {normalize(name) for name, _serial in listing.projects}


async def narrow(
    upstream: Upstream, settings: Settings, selection: set[str] | None
) -> set[str] | None:
    """The selection narrowed to the wanted authors' and maintainers' projects (unchanged
    when neither is set)."""
    wanted = settings.prefetch
    if not (wanted.authors or wanted.maintainers):
        return selection
    candidates = sorted(selection if selection is not None else await _index_names(upstream))
    matched: set[str] = set()
    unavailable: list[str] = []

    async def check(name: str) -> None:
        url = upstream_url(settings.upstream_base, name, None)
        try:
            fetched = await upstream.get_document(url)
            if fetched is None:
                raise UpstreamBadResponse("304 to a request without an ETag")
            if matches(_info(fetched.body), wanted.authors, wanted.maintainers):
                matched.add(name)
        except NotFound:
            pass
        except UpstreamUnavailable as exc:
            unavailable.append(f"{name}: {exc}")
        except UpstreamError as exc:
            log.warning("prefetch: the JSON API's document of %s is unusable: %s", name, exc)

    names = iter(candidates)

    async def work() -> None:
        for name in names:  # one iterator shared by the workers: each takes the next name
            await check(name)

    async with anyio.create_task_group() as group:
        for _ in range(wanted.workers):
            group.start_soon(work)
    if unavailable:
        raise UpstreamUnavailable(
            f"cannot read the authors of {len(unavailable)} projects: {unavailable[0]}"
        )
    log.info(
        "prefetch: %d of %d projects match the authors and maintainers selected",
        len(matched),
        len(candidates),
    )
    return matched
