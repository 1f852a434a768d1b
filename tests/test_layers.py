"""Imports flow one way (DESIGN.md): prefetch -> proxy, never the reverse, save in the two
modules that compose the program; logging setup depends on nothing of the project; parts are
named in code, not as import strings."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSERS = {"proxy/cli.py", "proxy/compose.py"}  # the command line and the composition root


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _proxy_modules() -> list[Path]:
    modules = sorted((ROOT / "proxy").rglob("*.py"))
    assert len(modules) > 40  # the walk found the package (else this checks nothing)
    return modules


def test_layers__the_core_never_imports_prefetch() -> None:
    upward = {
        str(path.relative_to(ROOT)): sorted(
            i for i in _imports(path) if i.split(".")[0] == "prefetch"
        )
        for path in _proxy_modules()
        if str(path.relative_to(ROOT)) not in COMPOSERS
    }
    assert {k: v for k, v in upward.items() if v} == {}
    assert "prefetch.service" in _imports(ROOT / "proxy/compose.py")


def test_layers__logging_setup_imports_the_standard_library_only() -> None:
    imported = _imports(ROOT / "proxy/logs.py")
    assert "logging" in imported
    assert sorted(i for i in imported if i.split(".")[0] not in sys.stdlib_module_names) == []


def test_layers__no_part_is_named_by_an_import_string() -> None:
    uses = [str(p.relative_to(ROOT)) for p in _proxy_modules() if "importlib" in _imports(p)]
    uses += [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "prefetch").glob("*.py"))
        if "importlib" in _imports(p)
    ]
    assert uses == []
