"""The data behind the fake upstream: projects, files, serials and a changelog, rendered the
way a real index renders them (PEP 503 HTML, PEP 691 JSON, the JSON API)."""

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

from proxy.parse import version_of
from tests.support.wheels import Built


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


class FakeIndex:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.projects: dict[str, FakeProject] = {}
        self.serial = 0
        self.changelog: list[tuple[str, str | None, int, str, int]] = []

    def _bump(self, project: FakeProject, version: str | None, action: str) -> None:
        self.serial += 1
        project.serial = self.serial
        self.changelog.append((project.name, version, int(time.time()), action, self.serial))

    def project(self, name: str) -> FakeProject:
        key = canonicalize_name(name)
        with self.lock:
            if key not in self.projects:
                self.projects[key] = FakeProject(name=key)
                self._bump(self.projects[key], None, "create")
            return self.projects[key]

    def add(self, name: str, fake: FakeFile) -> None:
        with self.lock:
            project = self.project(name)
            project.files[fake.built.filename] = fake
            self._bump(project, version_of(fake.built.filename), f"add file {fake.built.filename}")

    def remove_file(self, name: str, filename: str) -> None:
        with self.lock:
            project = self.project(name)
            del project.files[filename]
            self._bump(project, version_of(filename), f"remove file {filename}")

    def yank(self, name: str, filename: str, reason: str | bool) -> None:
        with self.lock:
            project = self.project(name)
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


def file_url(base_url: str, project: str, filename: str, relative: bool) -> str:
    path = f"files/{quote(project)}/{quote(filename)}"
    return f"../../{path}" if relative else f"{base_url}/{path}"


def _versions(project: FakeProject) -> list[str]:
    return sorted({v for f in project.files.values() if (v := version_of(f.built.filename))})


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
        f"</head><body>\n{links}\n</body></html>"
    ).encode()


def json_api(project: FakeProject, base_url: str) -> bytes:
    releases: dict[str, list[dict[str, Any]]] = {v: [] for v in _versions(project)}
    for fake in project.files.values():
        version = version_of(fake.built.filename)
        if version is None:
            continue
        releases[version].append(
            {
                "filename": fake.built.filename,
                "url": file_url(base_url, project.name, fake.built.filename, False),
                "digests": {"sha256": fake.built.sha256},
                "size": len(fake.built.content),
                "yanked": fake.yanked is not False,
                "yanked_reason": fake.yanked if isinstance(fake.yanked, str) else None,
                "requires_python": fake.requires_python,
                "packagetype": "bdist_wheel" if fake.built.filename.endswith(".whl") else "sdist",
                "upload_time_iso_8601": fake.upload_time,
            }
        )
    versions = _versions(project)
    latest = versions[-1] if versions else None
    info = {"name": project.name, "version": latest, "requires_python": None}
    return json.dumps(
        {
            "info": info,
            "releases": releases,
            "urls": releases.get(latest, []) if latest else [],
            "last_serial": project.serial,
        }
    ).encode()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
