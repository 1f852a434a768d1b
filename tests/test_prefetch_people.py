"""Selection by author or maintainer: the JSON API's info decides what a real
`pypi-proxy prefetch` mirrors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefetch.people import matches
from proxy.errors import SettingsError
from proxy.settings import load_settings
from tests.support import fake_index
from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.prefetching import stored
from tests.support.wheels import make_wheel

REPO = Path(__file__).resolve().parent.parent
PREFETCH = [sys.executable, "-m", "proxy", "prefetch"]


@pytest.mark.parametrize(
    ("info", "authors", "maintainers", "expected"),
    [
        ({"author": "Jane Doe"}, ["jane doe"], [], True),
        ({"author": "Janet Doe"}, ["Jane"], [], False),  # whole names, not substrings
        ({"author": "John Roe, Jane Doe"}, ["Jane Doe"], [], True),
        ({"author_email": '"Jane Doe" <jane@example.org>'}, ["JANE@example.org"], [], True),
        ({"author_email": '"Jane Doe" <jane@example.org>'}, ["Jane Doe"], [], True),
        ({"author_email": "a@x.org, b@corp.example"}, ["*@corp.example"], [], True),
        ({"maintainer": "Jane Doe"}, ["Jane Doe"], [], False),  # authors look at authors
        ({"maintainer_email": "ops@corp.example"}, [], ["*@CORP.example"], True),
        ({"author": "Jane Doe"}, [], ["Jane Doe"], False),
        ({"author": None, "author_email": ""}, ["*"], [], False),
        ({"author": ["Jane Doe"], "maintainer": {"x": 1}}, ["Jane Doe"], ["*"], False),
    ],
)
def test_matches(
    info: dict[str, object], authors: list[str], maintainers: list[str], expected: bool
) -> None:
    assert matches(info, authors, maintainers) is expected


def test_settings__people_split_on_commas_only() -> None:
    settings = load_settings(
        None, {"PYPI_PROXY_PREFETCH__AUTHORS": "Jane Doe, *@corp.example"}, None
    )
    assert settings.prefetch.authors == ("Jane Doe", "*@corp.example")
    with pytest.raises(SettingsError, match=r"prefetch\.maintainers"):
        load_settings(None, {}, {"prefetch": {"maintainers": {"not": "a list"}}})


def _serve_info(upstream: FakeUpstream, name: str, **info: object) -> None:
    """The fake's own JSON API document of ``name``, with these info fields added."""
    project = upstream.index.projects[name]
    data = json.loads(fake_index.json_api(project, upstream.base_url))
    data["info"].update(info)
    upstream.raw[f"/pypi/{name}/json"] = ("application/json", json.dumps(data).encode())


def _prefetch(upstream: FakeUpstream, cache: Path, config: Path, *args: str) -> str:
    done = _run(upstream, cache, config, *args)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _run(
    upstream: FakeUpstream, cache: Path, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    where = ["--config", str(config), "--cache-dir", str(cache)]
    return subprocess.run(
        [*PREFETCH, *where, "--upstream", upstream.simple_url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYPI_PROXY_")},
    )


def _projects(cache: Path) -> set[str]:
    return {name.split("-", 1)[0] for name in stored(cache)}


@pytest.fixture
def people(upstream: FakeUpstream) -> FakeUpstream:
    for name in ("alpha", "beta", "gamma", "delta", "epsilon", "evil", "bomb"):
        upstream.add_dist(name, make_wheel(name, "1.0"))
    _serve_info(upstream, "alpha", author="Jane Doe")
    _serve_info(upstream, "beta", author="", author_email='"JANE DOE" <jane@home.example>')
    _serve_info(upstream, "gamma", maintainer_email="Ops <ops@corp.example>")
    _serve_info(upstream, "delta", author="Janet Doe", maintainer="Jane Doe")
    # Hostile documents: a wrong type where a name belongs, and JSON nested past any parser.
    upstream.raw["/pypi/evil/json"] = ("application/json", b'{"info": {"author": ["Jane Doe"]}}')
    upstream.raw["/pypi/bomb/json"] = ("application/json", b"[" * 100_000 + b"]" * 100_000)
    return upstream


def test_prefetch__only_matching_projects_of_the_whole_index(
    tmp_path: Path, people: FakeUpstream
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("prefetch:\n  authors: [jane doe]\n  maintainers: ['*@corp.example']\n")
    cache = tmp_path / "cache"
    log = _prefetch(people, cache, config)
    assert _projects(cache) == {"alpha", "beta", "gamma"}
    assert "3 of 9 projects match" in log  # demo, helper and the seven above


def test_prefetch__narrows_a_named_selection(tmp_path: Path, people: FakeUpstream) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("prefetch:\n  projects: [alpha, delta, demo]\n  authors: [Jane Doe]\n")
    cache = tmp_path / "cache"
    _prefetch(people, cache, config)
    assert _projects(cache) == {"alpha"}
    people.raw["/pypi/demo/json"] = ("application/json", b'{"info": {"author": "Jane Doe"}}')
    _prefetch(people, cache, config)  # a later pass follows what the upstream now says
    assert _projects(cache) == {"alpha", "demo"}


def test_prefetch__upstream_json_api_down_fails_the_pass(
    tmp_path: Path, people: FakeUpstream
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("retries: 0\nprefetch:\n  projects: [alpha, beta]\n  authors: [Jane Doe]\n")
    people.raw_routes["/pypi/beta/json"] = RawAnswer(status=503, body=b"down\n")
    done = _run(people, tmp_path / "cache", config)
    assert done.returncode != 0
    assert "cannot read the authors of 1 projects: beta" in done.stderr
    assert "Traceback" not in done.stderr
