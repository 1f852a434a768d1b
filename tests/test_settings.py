from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.errors import SettingsError
from proxy.settings import Settings, load_settings, parse_size


def test_defaults__public_index_from_library_constant() -> None:
    from pypi_simple import PYPI_SIMPLE_ENDPOINT

    settings = load_settings(None, {}, {})
    assert settings.upstream == PYPI_SIMPLE_ENDPOINT
    assert settings.port == 8080 and settings.index_ttl == 600


def test_precedence__file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("port: 9000\nindex_ttl: 5\nhost: 0.0.0.0\noffline: true\n")
    env = {"PYPI_PROXY_PORT": "9100", "PYPI_PROXY_INDEX_TTL": "7", "UNRELATED": "x"}
    settings = load_settings(config, env, {"port": "9200", "host": None})
    assert settings.port == 9200
    assert settings.index_ttl == 7
    assert settings.host == "0.0.0.0"
    assert settings.offline is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"port": "http"}, "'port'"),
        ({"port": 70000}, "'port'"),
        ({"index_ttl": -1}, "'index_ttl'"),
        ({"upstream": "ftp://x/simple/"}, "'upstream'"),
        ({"offline": "maybe"}, "'offline'"),
        ({"max_cache_size": "lots"}, "'max_cache_size'"),
        ({"bogus": 1}, "'bogus'"),
    ],
)
def test_invalid__message_names_the_key(source: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(None, {}, source)


def test_invalid_yaml_file__clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("port: [1\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(config, {}, {})
    config.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(config, {}, {})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", {}, {})


def test_env_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"'workers'.*environment"):
        load_settings(None, {"PYPI_PROXY_WORKERS": "zero"}, {})


def test_parse_size() -> None:
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("500M") == 500 * 1024**2
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size(1234) == 1234
    assert parse_size("1.5k") == 1536


def test_upstream_gets_trailing_slash_and_base() -> None:
    settings = load_settings(None, {}, {"upstream": "http://u:p@127.0.0.1:9/root/simple"})
    assert settings.upstream == "http://u:p@127.0.0.1:9/root/simple/"
    assert settings.upstream_base == "http://u:p@127.0.0.1:9/root"


def test_example_config_documents_every_key() -> None:
    import dataclasses

    import yaml

    example = Path(__file__).parent.parent / "config.yaml"
    from proxy.settings import PrefetchSettings

    data = yaml.safe_load(example.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(Settings)}
    assert set(data["prefetch"]) == {f.name for f in dataclasses.fields(PrefetchSettings)}
    assert load_settings(example, {}, {}) == load_settings(None, {}, {})


def test_prefetch_section__yaml_env_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "prefetch:\n  enabled: true\n  projects: [requests, numpy]\n  platforms: any\n"
    )
    env = {"PYPI_PROXY_PREFETCH__WORKERS": "3", "PYPI_PROXY_PREFETCH__PACKAGETYPES": "wheel"}
    settings = load_settings(config, env, {})
    assert settings.prefetch.enabled is True
    assert settings.prefetch.projects == ("requests", "numpy")
    assert settings.prefetch.platforms == ("any",)
    assert settings.prefetch.workers == 3
    assert settings.prefetch.packagetypes == ("wheel",)
    with pytest.raises(SettingsError, match=r"'prefetch\.method'"):
        load_settings(None, {"PYPI_PROXY_PREFETCH__METHOD": "telepathy"}, {})
    with pytest.raises(SettingsError, match=r"'prefetch\.colour'"):
        load_settings(None, {}, {"prefetch": {"colour": "red"}})
    with pytest.raises(SettingsError, match=r"'prefetch\.cron'"):
        load_settings(None, {}, {"prefetch": {"cron": "every day"}})


def test_workers__auto_is_one_per_core_and_the_default(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert load_settings(None, {}, {"cache_dir": tmp_path}).workers == cores
    assert load_settings(None, {"PYPI_PROXY_WORKERS": "auto"}, {}).workers == cores
    assert load_settings(None, {"PYPI_PROXY_WORKERS": "3"}, {}).workers == 3
    with pytest.raises(SettingsError, match="workers"):
        load_settings(None, {"PYPI_PROXY_WORKERS": "many"}, {})
