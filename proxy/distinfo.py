"""Whether a ``.dist-info`` directory belongs to the wheel that holds it (issue 10).

A wheel's filename says which project and version it is (``{name}-{version}(-{build})?-{python}
-{abi}-{platform}.whl``, PEP 427); its metadata lives in ``{name}-{version}.dist-info``, where
both are escaped (runs of characters other than letters, digits and ``.`` become ``_``; PEP 491
also lowercases the name). Metadata in another project's (or version's) dist-info is not this
wheel's, whatever it says: the proxy makes none from it. Pure functions, no I/O.
"""

from __future__ import annotations

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

SUFFIX = ".dist-info"


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        # A legacy version: compared as escaped, ignoring case.
        return a.replace("-", "_").lower() == b.replace("-", "_").lower()


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    """The (name, version) a wheel's filename gives, or None when it is not a wheel's."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        return None
    return parts[0], parts[1]


def belongs_to(dist_info: str, wheel_filename: str) -> bool:
    """Whether the directory ``dist_info`` (``x-1.0.dist-info``) is the one of the wheel
    named ``wheel_filename``: the same normalized name and the same version."""
    wanted = wheel_name_version(wheel_filename)
    if wanted is None or not dist_info.endswith(SUFFIX):
        return False
    name, version = wanted
    stem = dist_info[: -len(SUFFIX)]
    # The escaped name has no "-", but an old tool may have left one: every split is tried.
    at = stem.find("-")
    while at > 0:
        if canonicalize_name(stem[:at]) == canonicalize_name(name) and _same_version(
            stem[at + 1 :], version
        ):
            return True
        at = stem.find("-", at + 1)
    return False
