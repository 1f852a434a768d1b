"""Pure parsers for upstream simple-API pages (PEP 503 HTML and PEP 691 JSON).

Anything a client could read is kept; file links that are not http(s) are dropped, because a
mirror must never be talked into fetching from ``file:``, ``ftp:`` or ``javascript:`` URLs.

An entry the cache could not store or verify is dropped too, so that one bad entry never breaks
the rest of the page: a filename that is not one safe path component of at most 255 bytes, or a
sha256 that is given but is not 64 hex digits (bytes we could never check). A PEP 658 metadata
hash of that kind only drops the metadata advertisement. Callers that pass ``dropped`` get one
line per dropped entry, to count and log.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from proxy.errors import UpstreamBadResponse
from proxy.models import DistFile, ProjectListing, ProjectPage
from proxy.names import MAX_FILENAME_LENGTH, is_safe_filename, is_sha256

_METADATA_SUFFIX = ".metadata"

_MODELLED_FILE_KEYS = {
    "filename",
    "url",
    "hashes",
    "requires-python",
    "yanked",
    "core-metadata",
    "dist-info-metadata",
    "data-dist-info-metadata",
    "size",
    "upload-time",
    "provenance",
    "gpg-sig",
}
_MODELLED_PAGE_KEYS = {"meta", "name", "files", "versions", "project-status"}


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _hashes(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k).lower(): str(v).lower() for k, v in value.items() if isinstance(v, str)}


def _fits(filename: str) -> bool:
    # The file system's limit is in bytes; a name of 255 characters can be 1,000 bytes of UTF-8.
    return is_safe_filename(filename) and len(filename.encode("utf-8")) <= MAX_FILENAME_LENGTH


def _bad_sha256(hashes: Mapping[str, str]) -> bool:
    value = hashes.get("sha256")
    return value is not None and not is_sha256(value)


def _storable(entry: DistFile, dropped: list[str] | None) -> DistFile | None:
    """The entry as the cache can keep it, or None (noted in ``dropped``) when it cannot."""
    if not _fits(entry.filename):
        _note(dropped, entry.filename, "filename is not a storable path component")
        return None
    if _bad_sha256(entry.hashes):
        _note(dropped, entry.filename, "sha256 is not 64 hex digits")
        return None
    metadata = entry.core_metadata
    if metadata is not False and (
        (isinstance(metadata, Mapping) and _bad_sha256(metadata))
        or not _fits(entry.filename + _METADATA_SUFFIX)
    ):
        _note(dropped, entry.filename, "metadata cannot be stored; not advertised")
        return dataclasses.replace(entry, core_metadata=False)
    return entry


def storable_files(
    files: tuple[DistFile, ...], dropped: list[str] | None = None
) -> tuple[DistFile, ...]:
    """The entries the cache can keep (for records stored before they were checked here)."""
    return tuple(entry for f in files if (entry := _storable(f, dropped)) is not None)


def _note(dropped: list[str] | None, filename: str, reason: str) -> None:
    if dropped is not None:
        shown = filename if len(filename) <= 80 else filename[:77] + "..."
        dropped.append(f"{shown!r}: {reason}")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _metadata_flag(value: Any) -> bool | dict[str, str]:
    if isinstance(value, Mapping):
        return _hashes(value) or True
    return bool(value) if isinstance(value, bool) else False


def version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
        return None


def versions_from(files: tuple[DistFile, ...]) -> tuple[str, ...]:
    found = {v for f in files if (v := version_of(f.filename)) is not None}
    return tuple(sorted(found))


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nested 9,000 deep, say
        raise UpstreamBadResponse(f"upstream page is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UpstreamBadResponse("upstream page is not a JSON object")
    return data


def _serial(value: Any) -> int | None:
    """A serial as a number, or as a numeric string (as some mirrors send it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return None


def parse_project_json(body: bytes, page_url: str, dropped: list[str] | None = None) -> ProjectPage:
    data = _load_json(body)
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    raw_files = data.get("files")
    if not isinstance(raw_files, list):
        raise UpstreamBadResponse("upstream JSON page has no files list")
    files: list[DistFile] = []
    for item in raw_files:
        entry = _json_file(item, page_url, dropped)
        if entry is not None:
            files.append(entry)
    versions = data.get("versions")
    status = data.get("project-status")
    return ProjectPage(
        name=str(data.get("name") or ""),
        files=tuple(files),
        api_version=str(meta.get("api-version") or "1.0"),
        serial=_serial(meta.get("_last-serial")),
        versions=(
            tuple(str(v) for v in versions)
            if isinstance(versions, list)
            else versions_from(tuple(files))
        ),
        project_status=(
            {str(k): str(v) for k, v in status.items()} if isinstance(status, Mapping) else None
        ),
        extra={k: v for k, v in data.items() if k not in _MODELLED_PAGE_KEYS},
    )


def _json_file(item: Any, page_url: str, dropped: list[str] | None) -> DistFile | None:
    if not isinstance(item, Mapping):
        return None
    filename, url = item.get("filename"), item.get("url")
    if not isinstance(filename, str) or not isinstance(url, str):
        return None
    url = urljoin(page_url, url)
    if not is_safe_filename(filename) or not _http_url(url):
        return None
    yanked = item.get("yanked", False)
    metadata = item.get("core-metadata", item.get("dist-info-metadata", False))
    size = item.get("size")
    provenance = item.get("provenance")
    gpg = item.get("gpg-sig")
    entry = DistFile(
        filename=filename,
        url=urldefrag(url).url,
        hashes=_hashes(item.get("hashes")),
        requires_python=_text(item.get("requires-python")),
        yanked=yanked if isinstance(yanked, str) and yanked else bool(yanked),
        core_metadata=_metadata_flag(metadata),
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        upload_time=item.get("upload-time") if isinstance(item.get("upload-time"), str) else None,
        provenance=urljoin(page_url, provenance) if isinstance(provenance, str) else None,
        gpg_sig=gpg if isinstance(gpg, bool) else None,
        extra=_extra_file_keys(item),
    )
    return _storable(entry, dropped)


def _extra_file_keys(item: Mapping[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in item.items() if k not in _MODELLED_FILE_KEYS}
    if "requires-python" in item and item["requires-python"] is None:
        extra["requires-python"] = None  # an explicit null passes through as null
    return extra


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str], str]] = []
        self.meta: dict[str, list[str]] = {}
        self._open: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "a":
            self._close()
            self._open, self._text = values, []
        elif tag == "meta" and "name" in values:
            self.meta.setdefault(values["name"], []).append(values.get("content", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close()

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def _close(self) -> None:
        if self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None

    def close(self) -> None:
        super().close()
        self._close()


def _collect(body: bytes) -> _LinkCollector:
    collector = _LinkCollector()
    collector.feed(body.decode("utf-8", errors="replace"))
    collector.close()
    return collector


def _hash_fragment(fragment: str) -> dict[str, str]:
    algo, sep, value = fragment.partition("=")
    return {algo.lower(): value.lower()} if sep and algo and value else {}


def _metadata_attr(value: str | None) -> bool | dict[str, str]:
    if value is None:
        return False
    if value.lower() == "true" or value == "":
        return True
    return _hash_fragment(value) or True


def parse_project_html(
    body: bytes, page_url: str, name: str = "", dropped: list[str] | None = None
) -> ProjectPage:
    collector = _collect(body)
    files: list[DistFile] = []
    for attrs, text in collector.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(page_url, href))
        filename = text or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not is_safe_filename(filename) or not _http_url(url):
            continue
        yanked_attr = attrs.get("data-yanked")
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        gpg = attrs.get("data-gpg-sig")
        entry = _storable(
            DistFile(
                filename=filename,
                url=url,
                hashes=_hash_fragment(fragment),
                requires_python=attrs.get("data-requires-python") or None,
                yanked=False if yanked_attr is None else (yanked_attr or True),
                core_metadata=_metadata_attr(metadata),
                provenance=(
                    urljoin(page_url, attrs["data-provenance"])
                    if "data-provenance" in attrs
                    else None
                ),
                gpg_sig=None if gpg is None else gpg.lower() == "true",
            ),
            dropped,
        )
        if entry is not None:
            files.append(entry)
    meta = collector.meta
    status = meta.get("pypi:project-status")
    project_status: dict[str, str] | None = None
    if status:
        project_status = {"status": status[0]}
        if reason := meta.get("pypi:project-status-reason"):
            project_status["reason"] = reason[0]
    extra: dict[str, Any] = {}
    if tracks := meta.get("pypi:tracks"):
        extra["tracks"] = tracks
    if alternates := meta.get("pypi:alternate-locations"):
        extra["alternate-locations"] = alternates
    version = meta.get("pypi:repository-version", ["1.0"])[0]
    page_files = tuple(files)
    return ProjectPage(
        name=name,
        files=page_files,
        api_version=version,
        serial=None,
        versions=versions_from(page_files),
        project_status=project_status,
        extra=extra,
    )


def parse_root_json(body: bytes) -> ProjectListing:
    data = _load_json(body)
    projects = data.get("projects")
    if not isinstance(projects, list):
        raise UpstreamBadResponse("upstream JSON root has no projects list")
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    assert isinstance(meta, Mapping)
    found: list[tuple[str, int | None]] = []
    for item in projects:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            found.append((item["name"], _serial(item.get("_last-serial"))))
    return ProjectListing(
        projects=tuple(found),
        api_version=str(meta.get("api-version") or "1.0"),
        serial=_serial(meta.get("_last-serial")),
    )


def parse_root_html(body: bytes) -> ProjectListing:
    collector = _collect(body)
    names = tuple((text, None) for _attrs, text in collector.anchors if text)
    version = collector.meta.get("pypi:repository-version", ["1.0"])[0]
    return ProjectListing(projects=names, api_version=version)
