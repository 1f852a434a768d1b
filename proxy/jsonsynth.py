"""A legacy JSON API document made from a stored simple page: what ``/pypi/<project>/json``
answers when the proxy holds the page but no usable JSON from its upstream (offline with none
stored, or one older than the page; an upstream with no JSON API), so that a mirror of this
proxy (bandersnatch) needs nothing the proxy does not hold.

Pure. Only what the page knows is given: per file its name, its URL in the ``/packages/``
layout, sha256, size, upload time, requires-python, yanked and why, core-metadata; per project
its releases (each file's version read from its name), the latest release (the highest not
wholly yanked) and ``last_serial`` (the page's). A file is left out when a mirror could not
use it: no sha256 (nothing to verify or to place it by), a name no version can be read from,
or no size known (neither on the page nor from a held copy).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from proxy.changelog import version_of
from proxy.models import DistFile, PageRecord
from proxy.names import is_sha256, packages_path

SizeOf = Callable[[str], int | None]  # sha256 -> the size of a held copy, if any


def _packagetype(filename: str) -> tuple[str, str]:
    """(packagetype, python_version) as the JSON API names them."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return "bdist_wheel", parts[-3] if len(parts) >= 5 else "py3"
    return "sdist", "source"


def _item(f: DistFile, size: int, url: str) -> dict[str, Any]:
    packagetype, python_version = _packagetype(f.filename)
    item: dict[str, Any] = {
        "filename": f.filename,
        "url": url,
        "digests": dict(f.hashes),
        "size": size,
        "packagetype": packagetype,
        "python_version": python_version,
        "requires_python": f.requires_python,
        "yanked": f.yanked is not False,
        "yanked_reason": f.yanked if isinstance(f.yanked, str) else None,
    }
    if f.upload_time is not None:
        item["upload_time_iso_8601"] = f.upload_time
        item["upload_time"] = f.upload_time.removesuffix("Z").split(".")[0]
    if isinstance(f.core_metadata, bool):
        item["core-metadata"] = f.core_metadata
    else:
        item["core-metadata"] = dict(f.core_metadata)
    return item


def _order(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:  # version_of only gives parseable ones; never fail a page on it
        return Version("0")


def synthesise(page: PageRecord, version: str | None, size_of: SizeOf) -> tuple[bytes, bytes]:
    """(template, token) as ``proxy.jsonapi.rewrite`` makes them: each file URL is the token
    followed by its path under the proxy. KeyError when ``version`` is not a release the
    page lists."""
    token = secrets.token_hex(16)
    releases: dict[str, list[dict[str, Any]]] = {}
    urls = 0
    for f in page.page.files:
        sha = f.sha256
        release = version_of(f.filename)
        size = f.size if f.size is not None else (size_of(sha) if sha else None)
        if sha is None or not is_sha256(sha) or release is None or size is None:
            continue
        url = token + "packages/" + packages_path(sha, quote(f.filename, safe=""))
        releases.setdefault(release, []).append(_item(f, size, url))
        urls += 1
    ordered = sorted(releases, key=_order)
    if version is not None and version not in releases:
        raise KeyError(version)
    live = [v for v in ordered if any(not item["yanked"] for item in releases[v])]
    latest = version if version is not None else ((live or ordered)[-1] if ordered else None)
    current = releases[latest] if latest is not None else []
    info = {
        "name": page.page.name,
        "version": latest,
        "requires_python": next(
            (i["requires_python"] for i in current if i["requires_python"]), None
        ),
        "summary": None,
        "yanked": bool(current) and all(i["yanked"] for i in current),
    }
    data: dict[str, Any] = {"info": info, "last_serial": page.page.serial, "urls": current}
    if version is None:
        data["releases"] = {v: releases[v] for v in ordered}
    template = json.dumps(data).encode()
    shown = len(current) + (urls if version is None else 0)
    if template.count(token.encode()) != shown:  # the token also in a name or hash: again
        return synthesise(page, version, size_of)
    return template, token.encode()
