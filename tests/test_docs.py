"""The configuration reference names every setting with its environment variable and flags."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from proxy.cli import build_parser
from proxy.settings import ENV_PREFIX, PrefetchSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"


def _keys() -> list[str]:
    top = [f.name for f in dataclasses.fields(Settings) if f.name != "prefetch"]
    return top + [f"prefetch.{f.name}" for f in dataclasses.fields(PrefetchSettings)]


def _rows() -> dict[str, str]:
    rows = {}
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([a-z0-9_.]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def _flags() -> dict[str, set[str]]:
    """Setting key -> the flags that set it, read from the real parser."""
    known = set(_keys())
    found: dict[str, set[str]] = {}
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for sub in commands.choices.values():
        for action in sub._actions:
            key = action.dest if action.dest in known else f"prefetch.{action.dest}"
            if key in known and action.option_strings:
                found.setdefault(key, set()).update(action.option_strings)
    return found


@pytest.mark.parametrize("key", _keys())
def test_reference__names_every_setting_with_its_variable(key: str) -> None:
    rows = _rows()
    assert key in rows, f"docs/configuration.md has no row for {key}"
    variable = ENV_PREFIX + key.replace("prefetch.", "prefetch__").upper()
    assert f"`{variable}`" in rows[key]


def test_reference__names_every_flag() -> None:
    rows = _rows()
    flags = _flags()
    assert flags["shutdown_grace"] == {"--shutdown-grace"}  # the parser is read, not skipped
    for key, options in flags.items():
        for option in options:
            assert f"`{option}`" in rows[key], f"{option} missing from the row of {key}"


def test_reference__no_rows_for_settings_that_do_not_exist() -> None:
    assert set(_rows()) <= set(_keys())


def test_readme__quick_start_is_two_commands_and_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert commands == ["make serve", "make test"]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
