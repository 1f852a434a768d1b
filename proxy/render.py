"""Pure renderers for the simple API: a page model in, PEP 691 JSON or PEP 503 HTML bytes out.

File URLs are relative (``../../files/<project>/<filename>``) so the same stored bytes are right
whatever host, port or path prefix the proxy is reached under.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from collections.abc import Callable, Iterable
from html import escape
from typing import Any
from urllib.parse import quote

from proxy.models import Body, DistFile, ProjectListing, ProjectPage, Rendered
from proxy.names import normalize

FileHref = Callable[[DistFile], str]


def file_href(project: str, filename: str, variant: str | None = None) -> str:
    """Where the proxy serves ``filename``, relative to ``/simple/<project>/``; a ``variant``
    segment tells apart entries of one page that share a filename."""
    if variant is not None:
        return f"../../files/{quote(project)}/{variant}/{quote(filename)}"
    return f"../../files/{quote(project)}/{quote(filename)}"


def project_file_href(project: str, files: Iterable[DistFile] = ()) -> FileHref:
    """File URLs for one page: the plain URL, or a variant URL for every entry whose filename
    the page lists more than once, so that each entry is fetched as its own bytes."""
    seen: set[str] = set()
    shared: set[str] = set()
    for f in files:
        (shared if f.filename in seen else seen).add(f.filename)
    return lambda f: file_href(project, f.filename, f.variant if f.filename in shared else None)


def _json_file(f: DistFile, href: FileHref) -> dict[str, Any]:
    item: dict[str, Any] = {"filename": f.filename, "url": href(f), "hashes": dict(f.hashes)}
    if f.requires_python:
        item["requires-python"] = f.requires_python
    item["yanked"] = f.yanked
    # Only the PEP 714 name: "dist-info-metadata" in JSON crashes some pip releases.
    if isinstance(f.core_metadata, bool):
        if f.core_metadata:
            item["core-metadata"] = True
    else:
        item["core-metadata"] = dict(f.core_metadata)
    if f.size is not None:
        item["size"] = f.size
    if f.upload_time is not None:
        item["upload-time"] = f.upload_time
    if f.provenance is not None:
        item["provenance"] = f.provenance
    if f.gpg_sig is not None:
        item["gpg-sig"] = f.gpg_sig
    for key, value in f.extra.items():
        if "dist-info-metadata" not in key:
            item.setdefault(key, value)
    return item


def _dump(data: dict[str, Any]) -> bytes:
    # A lone surrogate ("\ud800" in the upstream's JSON) cannot be UTF-8: it goes out escaped
    # the same way, never as an error.
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def project_json(page: ProjectPage, href: FileHref) -> bytes:
    meta: dict[str, Any] = {"api-version": page.api_version}
    if page.serial is not None:
        meta["_last-serial"] = page.serial
    data: dict[str, Any] = {"meta": meta, "name": page.name}
    if page.versions is not None:
        data["versions"] = list(page.versions)
    data["files"] = [_json_file(f, href) for f in page.files]
    if page.project_status is not None:
        data["project-status"] = dict(page.project_status)
    for key, value in page.extra.items():
        data.setdefault(key, value)
    return _dump(data)


def _hash_fragment(hashes: dict[str, str]) -> str:
    if "sha256" in hashes:
        return f"#sha256={hashes['sha256']}"
    for algo, value in sorted(hashes.items()):
        return f"#{algo}={value}"
    return ""


def _html_anchor(f: DistFile, href: FileHref) -> str:
    attrs = [f'href="{escape(href(f) + _hash_fragment(dict(f.hashes)))}"']
    if f.requires_python:
        attrs.append(f'data-requires-python="{escape(f.requires_python)}"')
    if f.yanked is not False:
        reason = f.yanked if isinstance(f.yanked, str) else ""
        attrs.append(f'data-yanked="{escape(reason)}"')
    if f.core_metadata is not False:
        value = "true"
        if not isinstance(f.core_metadata, bool) and "sha256" in f.core_metadata:
            value = f"sha256={f.core_metadata['sha256']}"
        attrs.append(f'data-core-metadata="{escape(value)}"')
    if f.provenance is not None:
        attrs.append(f'data-provenance="{escape(f.provenance)}"')
    if f.gpg_sig is not None:
        attrs.append(f'data-gpg-sig="{"true" if f.gpg_sig else "false"}"')
    return f"<a {' '.join(attrs)}>{escape(f.filename)}</a><br />"


def _meta_tags(items: Iterable[tuple[str, str]]) -> str:
    return "".join(f'\n<meta name="{escape(n)}" content="{escape(c)}">' for n, c in items)


def _html_document(title: str, metas: list[tuple[str, str]], links: Iterable[str]) -> bytes:
    head = f"<!DOCTYPE html>\n<html>\n<head>{_meta_tags(metas)}\n<title>{escape(title)}</title>"
    body = "\n".join(links)
    text = f"{head}\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    return text.encode("utf-8", "xmlcharrefreplace")  # a lone surrogate as a character reference


def project_html(page: ProjectPage, href: FileHref) -> bytes:
    metas = [("pypi:repository-version", page.api_version)]
    if page.project_status is not None:
        if "status" in page.project_status:
            metas.append(("pypi:project-status", page.project_status["status"]))
        if "reason" in page.project_status:
            metas.append(("pypi:project-status-reason", page.project_status["reason"]))
    for key in ("tracks", "alternate-locations"):
        values = page.extra.get(key)
        if isinstance(values, list):
            metas.extend((f"pypi:{key}", str(v)) for v in values)
    links = (_html_anchor(f, href) for f in page.files)
    return _html_document(f"Links for {page.name}", metas, links)


def root_json(listing: ProjectListing) -> bytes:
    meta: dict[str, Any] = {"api-version": listing.api_version}
    if listing.serial is not None:
        meta["_last-serial"] = listing.serial
    projects: list[dict[str, Any]] = []
    for name, serial in listing.projects:
        item: dict[str, Any] = {"name": name}
        if serial is not None:
            item["_last-serial"] = serial
        projects.append(item)
    return _dump({"meta": meta, "projects": projects})


def root_html(listing: ProjectListing) -> bytes:
    links = (
        # errors="replace": a name holding a lone surrogate gets a link, not an exception
        f'<a href="{escape(quote(normalize(name), errors="replace"))}/">{escape(name)}</a><br />'
        for name, _serial in listing.projects
    )
    return _html_document("Simple index", [("pypi:repository-version", listing.api_version)], links)


def body(raw: bytes) -> Body:
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return Body(raw=raw, gz=gzip.compress(raw, compresslevel=6, mtime=0), etag=digest)


def render_project(page: ProjectPage, project: str, made_metadata: bool = False) -> Rendered:
    """``made_metadata``: wheels the index gives no metadata for are announced with metadata
    (PEP 714 ``core-metadata: true``, no hash yet): the proxy makes it from the wheel."""
    if made_metadata and any(f.lacks_wheel_metadata for f in page.files):
        files = tuple(
            dataclasses.replace(f, core_metadata=True) if f.lacks_wheel_metadata else f
            for f in page.files
        )
        page = dataclasses.replace(page, files=files)
    href = project_file_href(project, page.files)
    return Rendered(json=body(project_json(page, href)), html=body(project_html(page, href)))


def render_root(listing: ProjectListing) -> Rendered:
    return Rendered(json=body(root_json(listing)), html=body(root_html(listing)))
