"""Which projects to mirror: names from the settings, the command line and requirements files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from proxy.errors import SettingsError
from proxy.names import is_valid_project_name, normalize


def names_from_requirements(path: Path, _seen: set[Path] | None = None) -> set[str]:
    """Project names in a pip requirements file, following ``-r``/``-c`` includes."""
    seen = _seen if _seen is not None else set()
    path = path.resolve()
    if path in seen:
        return set()
    seen.add(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read requirements file {path}: {exc.strerror}") from None
    names: set[str] = set()
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for flag in ("-r", "--requirement", "-c", "--constraint"):
            if line.startswith(flag + " ") or line.startswith(flag + "="):
                include = line[len(flag) + 1 :].strip()
                names |= names_from_requirements(path.parent / include, seen)
                break
        else:
            if line.startswith("-"):
                continue  # --index-url, -e, --hash lines and other options
            try:
                names.add(normalize(Requirement(line.split(" --", 1)[0]).name))
            except InvalidRequirement:
                continue
    return names


def resolve(projects: Iterable[str], requirements: Iterable[str]) -> set[str] | None:
    """The normalized selection, or None for the whole index."""
    names: set[str] = set()
    for name in projects:
        if not is_valid_project_name(name):
            raise SettingsError(f"not a valid project name: {name!r}")
        names.add(normalize(name))
    for file in requirements:
        names |= names_from_requirements(Path(file))
    return names or None
