from __future__ import annotations

from pathlib import Path

import pytest

from prefetch.filters import select
from prefetch.selection import names_from_requirements, resolve
from proxy.errors import SettingsError
from proxy.models import DistFile
from proxy.settings import PrefetchSettings

FILES = [
    DistFile("pkg-1.0.tar.gz", "https://f.test/a", size=100),
    DistFile("pkg-1.0-py3-none-any.whl", "https://f.test/b", size=100),
    DistFile("pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl", "https://f.test/c", size=5000),
    DistFile("pkg-2.0-cp311-cp311-win_amd64.whl", "https://f.test/d", size=100),
    DistFile("pkg-2.0-cp38-abi3-macosx_11_0_arm64.whl", "https://f.test/e", size=100),
    DistFile("pkg-2.0-cp312-cp312-manylinux_2_17_x86_64.whl", "https://f.test/f", size=100),
    DistFile("pkg-3.0rc1-py3-none-any.whl", "https://f.test/g", size=100),
    DistFile("pkg-0.9-py2-none-any.whl", "https://f.test/h", size=100),
    DistFile("pkg-1.5.tar.gz", "https://f.test/i", size=100, requires_python=">=3.12"),
]


def names(settings: PrefetchSettings) -> list[str]:
    return [f.filename for f in select(FILES, settings)]


def test_no_filters__everything() -> None:
    assert len(names(PrefetchSettings())) == len(FILES)


def test_packagetypes() -> None:
    assert names(PrefetchSettings(packagetypes=("sdist",))) == ["pkg-1.0.tar.gz", "pkg-1.5.tar.gz"]
    assert "pkg-1.0.tar.gz" not in names(PrefetchSettings(packagetypes=("wheel",)))


def test_platforms__globs_and_sdists_kept() -> None:
    kept = names(PrefetchSettings(platforms=("any", "manylinux*_x86_64")))
    assert "pkg-2.0-cp311-cp311-win_amd64.whl" not in kept
    assert "pkg-2.0-cp38-abi3-macosx_11_0_arm64.whl" not in kept
    assert "pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl" in kept
    assert "pkg-1.0-py3-none-any.whl" in kept
    assert "pkg-1.0.tar.gz" in kept


def test_python_versions__tags_abi3_and_requires_python() -> None:
    kept = names(PrefetchSettings(python_versions=("3.11",)))
    assert "pkg-2.0-cp312-cp312-manylinux_2_17_x86_64.whl" not in kept
    assert "pkg-0.9-py2-none-any.whl" not in kept
    assert "pkg-1.5.tar.gz" not in kept  # requires >=3.12
    assert "pkg-2.0-cp38-abi3-macosx_11_0_arm64.whl" in kept
    assert "pkg-2.0-cp311-cp311-win_amd64.whl" in kept
    assert "pkg-1.0.tar.gz" in kept


def test_prereleases_size_and_latest() -> None:
    assert "pkg-3.0rc1-py3-none-any.whl" not in names(PrefetchSettings(prereleases=False))
    assert "pkg-2.0-cp311-cp311-manylinux_2_17_x86_64.whl" not in names(
        PrefetchSettings(max_file_size=1000)
    )
    latest = names(PrefetchSettings(latest_versions=2, prereleases=False))
    assert {n.split("-")[1].removesuffix(".tar.gz") for n in latest} == {"2.0", "1.5"}


def test_requirements_files(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("Requests>=2  # comment\nzope.interface\n")
    (tmp_path / "req.txt").write_text(
        "-r base.txt\n--index-url http://x/simple/\n-e git+https://x/y#egg=y\n"
        "numpy==2.0 ; python_version > '3'\n# just a comment\n\nnot a requirement ===\n"
    )
    assert names_from_requirements(tmp_path / "req.txt") == {"requests", "zope-interface", "numpy"}
    assert resolve(["Foo_Bar"], [str(tmp_path / "base.txt")]) == {
        "foo-bar",
        "requests",
        "zope-interface",
    }
    assert resolve([], []) is None
    with pytest.raises(SettingsError):
        resolve(["../etc"], [])
    with pytest.raises(SettingsError):
        names_from_requirements(tmp_path / "missing.txt")


def test_progress__bar_on_a_terminal_lines_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    from prefetch.progress import PassProgress

    screen = io.StringIO()
    bar = PassProgress(2, stream=screen, tty=True)
    bar.advance(files=3, size=1024**2)
    bar.advance(failed=True)
    bar.finish()
    assert "[##############################] 2/2 projects, 3 files, 1.0 MB" in screen.getvalue()
    assert "1 failed" in screen.getvalue()
    with caplog.at_level(logging.INFO, logger="prefetch"):
        plain = PassProgress(1, stream=io.StringIO(), tty=False)
        plain.advance()
        plain.finish()
    assert "1/1 projects" in caplog.text
