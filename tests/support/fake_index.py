"""The data behind the fake upstream: projects, files, serials and a changelog, rendered the
way a real index renders them (PEP 503 HTML, PEP 691 JSON, the JSON API).

Nothing here imports the proxy: the fake must not share the bugs of the code it tests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tests.support.wheels import Built

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_JSON_TYPES = {JSON_TYPE, "application/vnd.pypi.simple.latest+json"}
_HTML_TYPES = {
    "text/html",
    "application/vnd.pypi.simple.v1+html",
    "application/vnd.pypi.simple.latest+html",
    "*/*",
}

ChangelogRow = tuple[str, str | None, int, str, int]  # name, version, timestamp, action, serial


@dataclass
class FakeFile:
    built: Built
    requires_python: str | None = None
    yanked: bool | str = False
    with_metadata: bool = True
    upload_time: str = "2024-01-01T00:00:00.000000Z"


@dataclass
class FakeProject:
    name: str
    files: dict[str, FakeFile] = field(default_factory=dict)
    serial: int = 0
    # (filename, sha256 text) listed on the page as they are, with no file behind them.
    odd_entries: list[tuple[str, str]] = field(default_factory=list)


def version_of(filename: str) -> str | None:
    """The version a filename carries: a wheel's second field, or an sdist's last one."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 else None
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            return stem.rpartition("-")[2] if "-" in stem else None
    return None


def _sort_key(version: str) -> tuple[int, Version | str]:
    # Invalid versions sort first, as text, instead of breaking the page.
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def sorted_versions(versions: set[str]) -> list[str]:
    return sorted(versions, key=_sort_key)


class FakeIndex:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.projects: dict[str, FakeProject] = {}
        self.serial = 0
        self.changelog: list[ChangelogRow] = []

    def _bump(self, project: FakeProject, version: str | None, action: str) -> None:
        self.serial += 1
        project.serial = self.serial
        self.changelog.append((project.name, version, int(time.time()), action, self.serial))

    def existing(self, name: str) -> FakeProject:
        """The project; KeyError when there is none."""
        return self.projects[canonicalize_name(name)]

    def project(self, name: str) -> FakeProject:
        """The project, created (a "create" entry, as the real changelog has) when missing."""
        key = canonicalize_name(name)
        with self.lock:
            if key not in self.projects:
                self.projects[key] = FakeProject(name=key)
                self._bump(self.projects[key], None, "create")
            return self.projects[key]

    def add(self, name: str, fake: FakeFile) -> None:
        filename = fake.built.filename
        version = version_of(filename)
        with self.lock:
            project = self.project(name)
            known = {version_of(f) for f in project.files}
            if version is not None and version not in known:
                self._bump(project, version, "new release")
            project.files[filename] = fake
            kind = "py3" if filename.endswith(".whl") else "source"
            self._bump(project, version, f"add {kind} file {filename}")

    def remove_file(self, name: str, filename: str) -> None:
        with self.lock:
            project = self.existing(name)
            del project.files[filename]
            self._bump(project, version_of(filename), f"remove file {filename}")

    def yank(self, name: str, filename: str, reason: str | bool) -> None:
        with self.lock:
            project = self.existing(name)
            project.files[filename].yanked = reason
            self._bump(project, version_of(filename), "yank release")

    def remove_project(self, name: str) -> None:
        with self.lock:
            project = self.projects.pop(canonicalize_name(name))
            self._bump(project, None, "remove project")

    def find_file(self, name: str, filename: str) -> tuple[FakeFile, bool] | None:
        """The file and whether its .metadata was asked for."""
        with self.lock:
            project = self.projects.get(canonicalize_name(name))
            if project is None:
                return None
            if filename in project.files:
                return project.files[filename], False
            base = filename.removesuffix(".metadata")
            if base != filename and base in project.files and project.files[base].with_metadata:
                return project.files[base], True
            return None

    def xmlrpc(self, method: str, params: tuple[Any, ...], page_size: int) -> Any:
        """The answer to one XML-RPC call; ValueError for a method the fake does not know."""
        with self.lock:
            if method == "changelog_last_serial":
                return self.serial
            if method == "list_packages_with_serial":
                return {p.name: p.serial for p in self.projects.values()}
            if method == "changelog_since_serial":
                since = int(params[0])
                return [list(row) for row in self.changelog if row[4] > since][:page_size]
        raise ValueError(f"unknown method {method!r}")


# -- reading requests --------------------------------------------------------------------------


def wants_json(accept: str) -> bool:
    """A small q-value reading of Accept (or of ``?format=``), enough for pip, uv and the proxy.

    Ties go to HTML, the format every client understands.
    """
    best_json = best_html = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in _JSON_TYPES:
            best_json = max(best_json, q)
        elif media in _HTML_TYPES:
            best_html = max(best_html, q)
    return best_json > best_html


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses weak comparison and may list several tags, or be ``*``."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (first, last), or None to serve everything: absent, multiple or
    malformed ranges are ignored, as RFC 9110 allows. Raises Unsatisfiable for a 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[6:].strip().partition("-")
    if not dash or not (first or last):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - int(last)), size - 1
    if last and int(last) < int(first):
        return None
    if int(first) >= size:
        raise Unsatisfiable
    return int(first), min(int(last), size - 1) if last else size - 1


# -- rendering ---------------------------------------------------------------------------------


def file_url(base_url: str, project: str, filename: str, relative: bool) -> str:
    path = f"files/{quote(project)}/{quote(filename)}"
    return f"../../{path}" if relative else f"{base_url}/{path}"


def _versions(project: FakeProject) -> list[str]:
    return sorted_versions({v for f in project.files if (v := version_of(f)) is not None})


def project_json(project: FakeProject, base_url: str, relative: bool, serial: int) -> bytes:
    files = []
    for fake in project.files.values():
        item: dict[str, Any] = {
            "filename": fake.built.filename,
            "url": file_url(base_url, project.name, fake.built.filename, relative),
            "hashes": {"sha256": fake.built.sha256},
            "yanked": fake.yanked,
            "size": len(fake.built.content),
            "upload-time": fake.upload_time,
        }
        if fake.requires_python:
            item["requires-python"] = fake.requires_python
        if fake.with_metadata:
            item["core-metadata"] = {"sha256": fake.built.metadata_sha256}
        files.append(item)
    for filename, sha256 in project.odd_entries:
        url = file_url(base_url, project.name, filename, relative)
        files.append({"filename": filename, "url": url, "hashes": {"sha256": sha256}})
    data = {
        "meta": {"api-version": "1.1", "_last-serial": serial},
        "name": project.name,
        "versions": _versions(project),
        "files": files,
    }
    return json.dumps(data).encode()


def project_html(project: FakeProject, base_url: str, relative: bool) -> bytes:
    links = []
    for fake in project.files.values():
        url = file_url(base_url, project.name, fake.built.filename, relative)
        attrs = [f'href="{escape(url)}#sha256={fake.built.sha256}"']
        if fake.requires_python:
            attrs.append(f'data-requires-python="{escape(fake.requires_python)}"')
        if fake.yanked is not False:
            reason = fake.yanked if isinstance(fake.yanked, str) else ""
            attrs.append(f'data-yanked="{escape(reason)}"')
        if fake.with_metadata:
            value = f"sha256={fake.built.metadata_sha256}"
            attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
        links.append(f"<a {' '.join(attrs)}>{escape(fake.built.filename)}</a><br/>")
    for filename, sha256 in project.odd_entries:
        url = file_url(base_url, project.name, filename, relative)
        links.append(f'<a href="{escape(url)}#sha256={escape(sha256)}">{escape(filename)}</a><br/>')
    body = "\n".join(links)
    return (
        '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1">'
        f"<title>Links for {project.name}</title></head><body><h1>Links for {project.name}</h1>"
        f"\n{body}\n</body></html>"
    ).encode()


def root_json(index: FakeIndex) -> bytes:
    projects = [{"name": p.name, "_last-serial": p.serial} for p in index.projects.values()]
    meta = {"api-version": "1.1", "_last-serial": index.serial}
    return json.dumps({"meta": meta, "projects": projects}).encode()


def root_html(index: FakeIndex) -> bytes:
    links = "\n".join(f'<a href="{p.name}/">{p.name}</a><br/>' for p in index.projects.values())
    return (
        '<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1">'
        f"<title>Simple index</title></head><body>\n{links}\n</body></html>"
    ).encode()


def _release_file(fake: FakeFile, project: FakeProject, base_url: str) -> dict[str, Any]:
    filename = fake.built.filename
    return {
        "filename": filename,
        "url": file_url(base_url, project.name, filename, False),
        "digests": {"sha256": fake.built.sha256},
        "size": len(fake.built.content),
        "yanked": fake.yanked is not False,
        "yanked_reason": fake.yanked if isinstance(fake.yanked, str) else None,
        "requires_python": fake.requires_python,
        "packagetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
        "python_version": "py3" if filename.endswith(".whl") else "source",
        "upload_time_iso_8601": fake.upload_time,
    }


def json_api(project: FakeProject, base_url: str) -> bytes:
    versions = _versions(project)
    releases: dict[str, list[dict[str, Any]]] = {v: [] for v in versions}
    for fake in project.files.values():
        version = version_of(fake.built.filename)
        if version is not None:
            releases[version].append(_release_file(fake, project, base_url))
    # "Latest" skips fully yanked releases when it can, as the real index does.
    live = [v for v in versions if any(f["yanked"] is False for f in releases[v])]
    latest = (live or versions)[-1] if versions else None
    urls = releases.get(latest, []) if latest is not None else []
    info = {
        "name": project.name,
        "version": latest,
        "requires_python": next((f["requires_python"] for f in urls if f["requires_python"]), None),
        "summary": f"The {project.name} test project",
        "yanked": bool(urls) and all(f["yanked"] for f in urls),
    }
    return json.dumps(
        {"info": info, "releases": releases, "urls": urls, "last_serial": project.serial}
    ).encode()
