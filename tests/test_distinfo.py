"""Which .dist-info directory is a wheel's own (PEP 427/491 escaping): made metadata is read
only from that one (issue 10)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from proxy.distinfo import belongs_to, wheel_name_version
from proxy.metasynth import stored_metadata
from proxy.wheelmeta import NoMetadata
from tests.support.wheels import foreign_wheel


@pytest.mark.parametrize(
    ("dist_info", "wheel"),
    [
        ("demo-1.0.dist-info", "demo-1.0-py3-none-any.whl"),
        ("Foo_Bar-1.0.dist-info", "foo_bar-1.0-py3-none-any.whl"),  # case, PEP 427 escaping
        ("foo.bar-2.0.dist-info", "foo_bar-2.0-py3-none-any.whl"),  # normalized alike
        ("foo_bar-2.0.dist-info", "Foo.Bar-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
        ("x-1.0.dist-info", "x-1.0.0-py3-none-any.whl"),  # the same version
        ("x-1.0+local.1.dist-info", "x-1.0+local.1-py3-none-any.whl"),
        ("x-1.0.dist-info", "x-1.0-1build-py3-none-any.whl"),  # a build tag
        ("foo-bar-1.0.dist-info", "foo_bar-1.0-py3-none-any.whl"),  # an old tool's hyphen
    ],
)
def test_belongs_to__the_wheels_own(dist_info: str, wheel: str) -> None:
    assert belongs_to(dist_info, wheel)


@pytest.mark.parametrize(
    ("dist_info", "wheel"),
    [
        ("other-1.0.dist-info", "demo-1.0-py3-none-any.whl"),  # another project's
        ("demo-2.0.dist-info", "demo-1.0-py3-none-any.whl"),  # another version's
        ("demo_evil-1.0.dist-info", "demo-1.0-py3-none-any.whl"),  # a longer name
        ("demo-1.0.dist-info", "evil_demo-1.0-py3-none-any.whl"),
        ("demo-1.0+evil.dist-info", "demo-1.0-py3-none-any.whl"),
        ("demo-1.0.egg-info", "demo-1.0-py3-none-any.whl"),
        ("demo.dist-info", "demo-1.0-py3-none-any.whl"),
        ("demo-1.0.dist-info", "demo-1.0.tar.gz"),  # not a wheel
        ("demo-1.0.dist-info", "demo-1.0-any.whl"),
    ],
)
def test_belongs_to__not_another_ones(dist_info: str, wheel: str) -> None:
    assert not belongs_to(dist_info, wheel)


def test_wheel_name_version() -> None:
    assert wheel_name_version("a_b-1.0-2-py3-none-any.whl") == ("a_b", "1.0")
    assert wheel_name_version("a-1.0.zip") is None


def test_stored_metadata__in_another_projects_dist_info_refused(tmp_path: Path) -> None:
    built = foreign_wheel("demo-1.0-py3-none-any.whl", "evil-1.0.dist-info")
    path = tmp_path / built.filename
    path.write_bytes(built.content)
    with pytest.raises(NoMetadata, match=r"evil-1\.0\.dist-info"):
        anyio.run(stored_metadata, path)
    own = foreign_wheel("demo-1.0-py3-none-any.whl", "demo-1.0.dist-info")
    path.write_bytes(own.content)
    assert anyio.run(stored_metadata, path) == own.metadata
