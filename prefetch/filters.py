"""Which of a project's files the mirror keeps: pure functions of the file list and settings."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from proxy.models import DistFile
from proxy.parse import version_of
from proxy.settings import PrefetchSettings


def _tags(filename: str) -> frozenset[Tag] | None:
    try:
        return parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return None


def _version(filename: str) -> Version | None:
    text = version_of(filename)
    try:
        return Version(text) if text is not None else None
    except InvalidVersion:
        return None


def _interpreter_fits(tag: Tag, major: int, minor: int) -> bool:
    interp = tag.interpreter
    if interp in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}", f"pp{major}{minor}"):
        return True
    if tag.abi == "abi3" and interp.startswith(f"cp{major}"):
        # cp38-abi3 runs on every CPython 3 from 3.8 on.
        digits = interp[len(f"cp{major}") :]
        return digits.isdigit() and int(digits) <= minor
    return False


def _python_fits(f: DistFile, versions: Sequence[str]) -> bool:
    parsed = []
    for text in versions:
        major, _, minor = text.partition(".")
        if major.isdigit() and minor.isdigit():
            parsed.append((text, int(major), int(minor)))
    if f.requires_python:
        try:
            spec = SpecifierSet(f.requires_python)
            parsed = [p for p in parsed if spec.contains(p[0], prereleases=True)]
        except InvalidSpecifier:
            pass  # an unreadable Requires-Python does not exclude a file
    if not parsed:
        return False
    tags = _tags(f.filename)
    if tags is None:
        return True
    return any(_interpreter_fits(t, major, minor) for t in tags for _v, major, minor in parsed)


def keep(f: DistFile, settings: PrefetchSettings) -> bool:
    """Whether one file passes every per-file filter."""
    is_wheel = f.filename.endswith(".whl")
    if settings.packagetypes and ("wheel" if is_wheel else "sdist") not in settings.packagetypes:
        return False
    too_big = settings.max_file_size is not None and (f.size or 0) > settings.max_file_size
    if too_big:
        return False
    if not settings.prereleases:
        version = _version(f.filename)
        if version is not None and version.is_prerelease:
            return False
    if settings.platforms and is_wheel:
        tags = _tags(f.filename)
        if tags is not None and not any(
            fnmatchcase(t.platform, pattern) for t in tags for pattern in settings.platforms
        ):
            return False
    return not settings.python_versions or _python_fits(f, settings.python_versions)


def select(files: Sequence[DistFile], settings: PrefetchSettings) -> list[DistFile]:
    """The files to mirror: the per-file filters, then the newest N versions if asked."""
    kept = [f for f in files if keep(f, settings)]
    if settings.latest_versions is None:
        return kept
    versions = sorted({v for f in kept if (v := _version(f.filename)) is not None}, reverse=True)
    newest = set(versions[: settings.latest_versions])
    return [f for f in kept if _version(f.filename) in newest]
