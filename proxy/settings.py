"""Settings: built-in defaults, then the YAML file, then PYPI_PROXY_* variables, then flags.

Nothing here runs at import time; ``load_settings`` is called once by the command line and the
result is passed to whatever needs it. What each key's value may be is ``proxy.settingvalues``;
secrets read from files are ``proxy.secretfiles``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from proxy.environment import settings_from_environment
from proxy.errors import SettingsError
from proxy.secretfiles import resolve_secret_files
from proxy.settingvalues import (
    CONVERTERS,
    PREFETCH_CONVERTERS,
    default_upstream,
    default_workers,
)
from proxy.settingvalues import parse_size as parse_size  # importable from here too
from proxy.settingvalues import upstream_warning as upstream_warning

ENV_PREFIX = "PYPI_PROXY_"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pypi-proxy"


@dataclass(frozen=True)
class PrefetchSettings:
    """The ``prefetch:`` section: what the mirror holds and how it keeps up with the upstream."""

    enabled: bool = False
    interval: float = 3600.0
    cron: str | None = None
    projects: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()  # matched against the JSON API's info (prefetch.people)
    maintainers: tuple[str, ...] = ()
    method: str = "auto"
    workers: int = 8
    xmlrpc_url: str | None = None
    platforms: tuple[str, ...] = ()
    python_versions: tuple[str, ...] = ()
    packagetypes: tuple[str, ...] = ()
    prereleases: bool = True
    latest_versions: int | None = None
    max_file_size: int | None = None
    max_attempts: int = 3
    gone_recheck: float = 3.0
    root_deadline: float | None = None  # None: 10 times upstream_deadline
    max_root_size: int = 512 * 1024**2


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = field(default_factory=lambda: default_upstream())
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Where package files live: None for the cache directory, or s3://bucket/prefix (shared by
    # replicas; see proxy/storefactory.py). The s3_* keys fill in what the AWS_* variables
    # would; a setting wins over its variable.
    storage: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_secret_access_key_file: str | None = None
    s3_redirect: bool = False
    s3_redirect_expiry: float = 300.0
    local_copies_size: int | None = None
    offline: bool = False
    index_ttl: float = 600.0
    negative_ttl: float = 60.0
    max_cache_size: int | None = None
    scrub_interval: float | None = None
    memory_cache_size: int = 256 * 1024**2
    memory_files_size: int = 64 * 1024**2
    workers: int = field(default_factory=default_workers)  # "auto"
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 2
    breaker_threshold: int = 5
    breaker_reset: float = 15.0
    ca_bundle: str | None = None
    allowed_file_hosts: tuple[str, ...] = ()
    allowed_private_networks: tuple[str, ...] = ()
    max_redirects: int = 5
    max_page_size: int = 64 * 1024**2
    max_page_inflated: int = 128 * 1024**2
    upstream_deadline: float = 30.0
    page_connections: int = 20
    file_connections: int = 100
    user_agent: str | None = None
    admin_token: str | None = None
    admin_token_file: str | None = None
    auth_htpasswd: str | None = None
    auth_tokens: tuple[str, ...] = ()
    auth_check_threads: int = 2
    auth_max_pending: int = 64
    auth_tokens_file: str | None = None
    upstream_password_file: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    idle_timeout: float = 15.0
    head_timeout: float = 10.0
    max_head_size: int = 64 * 1024
    max_connections: int = 1000
    send_timeout: float = 60.0
    shutdown_grace: float = 10.0
    accel_redirect: str | None = None  # a front nginx's internal location for cache hits
    wheel_metadata: bool = True  # serve <wheel>.metadata read from wheels the index lacks it for
    prefetch: PrefetchSettings = field(default_factory=PrefetchSettings)

    @property
    def upstream_base(self) -> str:
        """The upstream's origin plus any path before ``/simple/`` (where /pypi lives)."""
        path = urlsplit(self.upstream).path.rstrip("/")
        base = self.upstream.rstrip("/")
        if path.endswith("/simple"):
            base = base[: -len("/simple")]
        return base

    @property
    def xmlrpc_url(self) -> str:
        return self.prefetch.xmlrpc_url or self.upstream_base + "/pypi"


# Each field has its converter, and each converter its field.
assert set(PREFETCH_CONVERTERS) == {f.name for f in dataclasses.fields(PrefetchSettings)}
assert set(CONVERTERS) == {f.name for f in dataclasses.fields(Settings)}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings")
    return data


# Values never echoed in a message: URLs may carry credentials, tokens are secrets.
_MAY_HOLD_SECRETS = frozenset(
    {
        "upstream",
        "xmlrpc_url",
        "admin_token",
        "auth_tokens",
        "storage",  # a URL someone may have put credentials in (refused, and not echoed)
        "s3_endpoint",
        "s3_access_key_id",
        "s3_secret_access_key",
    }
)


def _convert_into(
    target: dict[str, Any],
    converters: Mapping[str, Callable[[Any], Any]],
    key: Any,
    raw: Any,
    where: str,
    prefix: str = "",
) -> None:
    """Convert one setting into ``target``; a YAML null means the built-in default."""
    name = str(key).replace("-", "_")
    convert = converters.get(name)
    if convert is None:
        raise SettingsError(f"unknown setting '{prefix}{key}' in {where}")
    if raw is None:
        target.pop(name, None)
        return
    try:
        target[name] = convert(raw)
    except (TypeError, ValueError) as exc:
        got = "" if name in _MAY_HOLD_SECRETS else f" (got {raw!r})"
        raise SettingsError(f"invalid setting '{prefix}{name}' in {where}: {exc}{got}") from None


def _apply_prefetch(values: dict[str, Any], source: Any, where: str) -> None:
    if not isinstance(source, Mapping):
        raise SettingsError(f"invalid setting 'prefetch' in {where}: expected a mapping")
    section: dict[str, Any] = values.setdefault("prefetch", {})
    for key, raw in source.items():
        _convert_into(section, PREFETCH_CONVERTERS, key, raw, where, "prefetch.")


def _apply(values: dict[str, Any], source: Mapping[str, Any], where: str) -> None:
    for key, raw in source.items():
        name = str(key).replace("-", "_")
        if name == "prefetch":
            if raw is not None:
                _apply_prefetch(values, raw, where)
        elif name.startswith("prefetch__"):
            _apply_prefetch(values, {name[len("prefetch__") :]: raw}, where)
        else:
            _convert_into(values, CONVERTERS, key, raw, where)


def _build(values: dict[str, Any]) -> Settings:
    """Converted values to Settings, with the checks that span several keys."""
    values = dict(values)
    values["prefetch"] = PrefetchSettings(**values.get("prefetch", {}))
    settings = Settings(**values)
    if bool(settings.tls_certfile) != bool(settings.tls_keyfile):
        raise SettingsError(
            "invalid setting 'tls_certfile': tls_certfile and tls_keyfile go together"
        )
    for key in ("tls_certfile", "tls_keyfile", "auth_htpasswd", "ca_bundle"):
        path = getattr(settings, key)
        if path and not Path(path).is_file():
            raise SettingsError(f"invalid setting {key!r}: no file at {path}")
    return settings


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the sources in order; a bad key or value raises SettingsError naming it."""
    values: dict[str, Any] = {}
    if config_file is not None:
        _apply(values, _read_yaml(config_file), f"config file {config_file}")
    env = os.environ if environ is None else environ
    known = set(CONVERTERS) | {"prefetch"}
    from_env = settings_from_environment(env, ENV_PREFIX, known, skip=(ENV_PREFIX + "CONFIG",))
    _apply(values, from_env, "environment (PYPI_PROXY_*)")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    resolve_secret_files(values)
    return _build(values)
