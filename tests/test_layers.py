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


# The callers of the mirror facade (issue 11): they ask ``runtime.mirror``, never the parts it
# wraps. ``Runtime`` itself and the facade's own modules are the only ones to touch them.
FACADE_CALLERS = (
    "proxy/web/*.py",
    "prefetch/*.py",
    "proxy/verify.py",
    "proxy/scrub.py",
    "proxy/cli.py",
)
WRAPPED_PARTS = {"storage", "index", "filler", "stats"}
# (proxy.rootlisting is the page service's part for /simple/: wrapped with it.)
WRAPPED_MODULES = {
    "proxy.storage",
    "proxy.pageservice",
    "proxy.rootlisting",
    "proxy.fill",
    "proxy.heldfiles",
}
WRAPPED_NAMES = {
    "Storage",
    "PageService",
    "RootListing",
    "Filler",
    "HeldFiles",
}  # HeldFile: a value


def _runtime_like(node: ast.expr) -> bool:
    # `runtime`, `self._runtime`, `request.app.state.runtime`: whatever the Runtime is called by
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return isinstance(name, str) and name.lstrip("_").endswith("runtime")


def _reaches_past_the_facade(source: str, path: str = "<sample>") -> list[str]:
    """Each use of a part the mirror wraps, as "line: what"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Attribute) and node.attr in WRAPPED_PARTS:
            if _runtime_like(node.value):
                found.append(f"{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and _runtime_like(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in WRAPPED_PARTS
        ):
            found.append(f"{node.lineno}: getattr {node.args[1].value}")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {alias.name for alias in node.names}
            if node.module in WRAPPED_MODULES and names & WRAPPED_NAMES:
                found.append(f"{node.lineno}: imports {', '.join(sorted(names & WRAPPED_NAMES))}")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


def test_layers__the_detector_finds_each_way_past_the_facade() -> None:
    # What the check below must catch, so that its passing means something.
    sample = (
        "from proxy.storage import Storage\n"
        "storage = runtime.storage\n"
        "await self._runtime.index.stored_project(name)\n"
        "request.app.state.runtime.filler.start(target)\n"
        "getattr(runtime, 'storage')\n"
        "runtime.stats.request(route, outcome, seconds)\n"
        "runtime.mirror.stored_totals()\n"
        "storage.index.get(key)\n"
        "from proxy.heldfiles import HeldFile, HeldFiles\n"
        "from proxy.rootlisting import RootListing\n"
    )
    assert _reaches_past_the_facade(sample) == [
        "1: imports Storage",
        "2: .storage",
        "3: .index",
        "4: .filler",
        "5: getattr storage",
        "6: .stats",
        "9: imports HeldFiles",
        "10: imports RootListing",
    ]


def test_layers__web_prefetch_verify_and_scrub_call_the_mirror_only() -> None:
    # (The prefetcher's own upstream calls, XML-RPC and people, are not the cache's: allowed.)
    callers = sorted({p for pattern in FACADE_CALLERS for p in ROOT.glob(pattern)})
    assert len(callers) > 25  # the globs found web/ and prefetch/ (else this checks nothing)
    found = {
        str(path.relative_to(ROOT)): _reaches_past_the_facade(path.read_text(), str(path))
        for path in callers
    }
    assert {k: v for k, v in found.items() if v} == {}


# Storage and its parts (issue 11): the facade's callers hold a StoredFile at most. The CLI's
# check of the storage before a server starts is the composition's (proxy.compose).
STORAGE_MODULES = {
    "proxy.storage",
    "proxy.storefactory",
    "proxy.pagerecords",
    "proxy.replicapages",
    "proxy.workfiles",
    "proxy.localstore",
    "proxy.s3store",
    "proxy.tiered",
    "proxy.uploads",
    "proxy.sharedrecords",
}


def test_layers__facade_callers_import_no_part_of_the_storage() -> None:
    assert {f"proxy.{p.stem}" for p in (ROOT / "proxy").glob("*.py")} >= STORAGE_MODULES
    callers = sorted({p for pattern in FACADE_CALLERS for p in ROOT.glob(pattern)})
    found = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & STORAGE_MODULES) for path in callers
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_layers__the_cli_opens_no_storage_itself() -> None:
    cli = (ROOT / "proxy/cli.py").read_text()
    assert _reaches_past_the_facade(cli) == []
    assert "Storage.from_settings" not in cli and "check_storage" not in cli
    assert "check_storage" in (ROOT / "proxy/compose.py").read_text()


# Storage owns every path (issue 11): the prefetcher asks the mirror for its files
# (``Mirror.state_file``); it never builds a path under the cache directory itself.
CACHE_LAYOUT = {"state", "files", "tmp", "index", "uploads"}


def _names_the_layout(source: str, path: str = "<sample>") -> list[str]:
    """Each place a path under the cache directory is built, as "line: what"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in ("cache_dir", "state_dir", "tmp_dir", "files_dir"):
                found.append(f"{node.lineno}: {name}")
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and str(node.right.value).split("/")[0] in CACHE_LAYOUT
        ):
            found.append(f"{node.lineno}: / {node.right.value!r}")
    return sorted(set(found), key=lambda line: (int(line.split(":")[0]), line))


def test_layers__the_layout_detector_finds_each_way() -> None:
    sample = (
        "path = settings.cache_dir / 'state' / 'prefetch.sqlite'\n"
        "lock = root / 'state/prefetch.lock'\n"
        "work = storage.tmp_dir\n"
        "files = {'files': []}\n"  # a JSON document's key is no path
        "db = runtime.mirror.state_file('prefetch.sqlite')\n"
    )
    assert _names_the_layout(sample) == [
        "1: / 'state'",
        "1: cache_dir",
        "2: / 'state/prefetch.lock'",
        "3: tmp_dir",
    ]


def test_layers__prefetch_names_no_cache_directory_layout() -> None:
    modules = sorted((ROOT / "prefetch").glob("*.py"))
    assert len(modules) > 8  # the glob found the package (else this checks nothing)
    found = {
        str(path.relative_to(ROOT)): _names_the_layout(path.read_text(), str(path))
        for path in modules
    }
    assert {k: v for k, v in found.items() if v} == {}


def test_layers__what_is_held_is_kept_in_one_place() -> None:
    # Issue 11: "held" lived in the index's pin: keys and in the prefetcher's files table. Now
    # the held list alone says it: the old keys are read only to migrate them, the list's file
    # is named only by Storage (which owns every path), and only its module queries it.
    sources = {
        str(p.relative_to(ROOT)): p.read_text()
        for p in [*_proxy_modules(), *sorted((ROOT / "prefetch").glob("*.py"))]
    }
    assert sorted(k for k, text in sources.items() if '"pin:"' in text) == [
        "proxy/heldmigration.py"
    ]
    assert sorted(k for k, text in sources.items() if '"held.sqlite"' in text) == [
        "proxy/storage.py"
    ]
    assert sorted(k for k, text in sources.items() if "FROM held" in text) == ["proxy/heldfiles.py"]
    assert sorted(k for k, text in sources.items() if "FROM files" in text) == [
        "proxy/heldmigration.py"
    ]


def test_layers__batch_durability_is_the_fillers_and_the_facades_alone() -> None:
    # The journal decides what a crash re-checks: one writer (the filler), one reader (the
    # facade's recover_batches); everyone else asks the mirror (issue 10).
    users = sorted(
        str(path.relative_to(ROOT))
        for path in [*_proxy_modules(), *sorted((ROOT / "prefetch").glob("*.py"))]
        if "proxy.batchsync" in _imports(path)
    )
    assert users == ["proxy/cache.py", "proxy/fill.py"]
