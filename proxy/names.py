"""Project and file names: PEP 503 normalization and the checks that keep paths safe."""

from __future__ import annotations

import re

# PEP 508 names; anything else can never exist upstream, so it is refused early.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_.]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
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
