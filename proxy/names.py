"""Project and file names: PEP 503 normalization and the checks that keep paths safe."""

from __future__ import annotations

import re

from packaging.utils import parse_sdist_filename, parse_wheel_filename

# PEP 508 names; anything else can never exist upstream, so it is refused early.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_.]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LEGACY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*?)-[0-9]")  # name-1.0.win32.exe, name-1.0.zip
MAX_NAME_LENGTH = 200
MAX_FILENAME_LENGTH = 255


def normalize(name: str) -> str:
    """PEP 503 normalized form of a project name."""
    return _SEPARATORS.sub("-", name).lower()


def is_valid_project_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _VALID_NAME.match(name) is not None


def is_safe_filename(filename: str) -> bool:
    """A distribution filename that can be used as one path component, nothing more."""
    return (
        0 < len(filename) <= MAX_FILENAME_LENGTH
        and filename not in (".", "..")
        and not filename.startswith(".")
        and "/" not in filename
        and "\\" not in filename
        and "\x00" not in filename
        and filename.isprintable()
    )


def is_sha256(value: str) -> bool:
    return _SHA256.match(value) is not None


def packages_path(sha256: str, filename: str) -> str:
    """A file's path in the ``/packages/`` layout tools that map URLs to local paths expect
    (bandersnatch does): ``ab/cd/<the other 60 hex digits>/<filename>``, from its sha256."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256[4:]}/{filename}"


def project_of(filename: str) -> str | None:
    """The normalized project a distribution's filename names (PEP 427 / PEP 625, and the
    ``name-version...`` shape of older uploads); None when it cannot be told."""
    base = filename.removesuffix(".metadata")
    try:
        if base.endswith(".whl"):
            return str(parse_wheel_filename(base)[0])
        return str(parse_sdist_filename(base)[0])
    except ValueError:  # InvalidWheelFilename / InvalidSdistFilename and older names
        pass
    match = _LEGACY.match(base)
    return normalize(match.group(1)) if match else None
