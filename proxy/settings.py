"""Settings: built-in defaults, then the YAML file, then PYPI_PROXY_* variables, then flags.

Nothing here runs at import time; ``load_settings`` is called once by the command line and the
result is passed to whatever needs it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml

from proxy.environment import settings_from_environment
from proxy.errors import SettingsError
from proxy.origins import parse_pattern
from proxy.s3config import is_s3_url, s3_config_from

ENV_PREFIX = "PYPI_PROXY_"


def default_workers() -> int:
    """``workers: auto``: one per core this process may run on (a hot hit is CPU-bound, and a
    worker costs about 70 MB of memory)."""
    try:
        return max(1, min(64, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(64, os.cpu_count() or 1))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pypi-proxy"


def default_upstream() -> str:
    """The public index's simple API, from the library that names it. Imported only when no
    upstream is set: pypi_simple brings requests and bs4, half of a command's start time."""
    from pypi_simple import PYPI_SIMPLE_ENDPOINT

    return str(PYPI_SIMPLE_ENDPOINT)


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


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _auto_or(auto: Callable[[], int], convert: Callable[[Any], int]) -> Callable[[Any], int]:
    def wrapped(value: Any) -> int:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return auto()
        return convert(value)

    return wrapped


def _int(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        expected = f"expected a whole number from {low} to {high}"
        if isinstance(value, bool):
            raise ValueError(expected)
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ValueError(expected) from None  # not int()'s "invalid literal for int()"
        if not low <= number <= high:
            raise ValueError(expected)
        return number

    return convert


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds, such as 30 or 0.5") from None
    if number < 0 or number != number:
        raise ValueError("expected a number of seconds >= 0")
    return number


def _positive_seconds(value: Any) -> float:
    number = _seconds(value)
    if number == 0 or number == float("inf"):
        raise ValueError("expected a number of seconds > 0")
    return number


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: Any) -> int:
    """Bytes from ``123``, ``"500M"``, ``"10GB"`` or ``"2GiB"`` (binary units throughout)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError("expected a size such as 500M or 10G")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("expected a size above zero, such as 64M")
    return size


def _size_between(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"expected a size from {low} to {high} bytes")
        return size

    return convert


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null")):
            return None
        return convert(value)

    return wrapped


def _origin_patterns(value: Any) -> tuple[str, ...]:
    patterns = tuple(h.lower() for h in _names(value))
    for pattern in patterns:
        parse_pattern(pattern)  # ValueError names the bad entry
    return patterns


def _networks(value: Any) -> tuple[str, ...]:
    networks = _names(value)
    for network in networks:
        ipaddress.ip_network(network, strict=False)
    return networks


def _upstream(value: Any) -> str:
    url = str(value).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL of a simple index, such as https://host/simple/")
    return url if url.endswith("/") else url + "/"


def _simple_index(value: Any) -> str:
    """The upstream: a bare host (``https://host/``) is refused, since every page would be 404.

    Only the host-only form is refused: a private index may live under another path (devpi's
    ``/root/pypi/+simple/``, a hosted feed's ``/<user>/``), so any other path is taken, with a
    warning at startup where it does not end in ``simple`` (see ``upstream_warning``).
    """
    url = _upstream(value)
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        host = parts.netloc.rsplit("@", 1)[-1]  # never echo the credentials
        raise ValueError(
            f"{parts.scheme}://{host}/ names a host, not its simple index: "
            f"write {parts.scheme}://{host}/simple/ (the URL pip's --index-url takes)"
        )
    return url


def upstream_warning(url: str) -> str | None:
    """Why an upstream URL looks wrong, or None: its path should end in ``simple``."""
    if urlsplit(url).path.rstrip("/").endswith("simple"):  # /simple/, devpi's /+simple/
        return None
    return (
        "does not end in /simple/; if every page is 404, set upstream to the simple index URL "
        "(the one pip's --index-url takes), such as https://host/simple/"
    )


def _log_level(value: Any) -> str:
    level = str(value).strip().lower()
    if level not in ("critical", "error", "warning", "info", "debug"):
        raise ValueError("expected one of critical, error, warning, info, debug")
    return level


def _text(value: Any) -> str:
    return str(value)


def _accel_prefix(value: Any) -> str:
    """An absolute URI path ending in ``/``: the front server's internal location."""
    text = str(value).strip()
    if not re.fullmatch(r"/(?:[A-Za-z0-9._~-]+/)+", text) or "/../" in text or "/./" in text:
        raise ValueError("expected a path like /_cache/ (letters, digits, ._~- between slashes)")
    return text


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[Any] = [v for v in re.split(r"[,\s]+", value) if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("expected a list (or a comma-separated string)")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _people(value: Any) -> tuple[str, ...]:
    """Names or e-mail addresses (globs allowed); a string is split on commas only, since a
    name has spaces in it ("Jane Doe, ops@example.org")."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return _names(value)


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return convert


def _packagetypes(value: Any) -> tuple[str, ...]:
    kinds = _names(value)
    for kind in kinds:
        if kind not in ("sdist", "wheel"):
            raise ValueError("expected a list of sdist and/or wheel")
    return kinds


def _cron(value: Any) -> str:
    text = str(value).strip()
    if len(text.split()) != 5:
        raise ValueError("expected a five-field cron expression such as '0 3 * * *'")
    return text


def _storage(value: Any) -> str:
    """``s3://bucket/prefix``, checked now so a typo fails at start, not at the first file.
    The cache directory is the default: there is no other scheme to name."""
    text = str(value).strip()
    if not is_s3_url(text):
        raise ValueError("expected s3://bucket/prefix (leave unset for the cache directory)")
    try:
        s3_config_from(text, {})
    except SettingsError as exc:
        raise ValueError(str(exc).removeprefix("storage: ")) from None
    return text.rstrip("/")


def _endpoint(value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL: use s3_access_key_id/...")
    return text.rstrip("/")


def _redirect_expiry(value: Any) -> float:
    number = _positive_seconds(value)
    if number > 7 * 86400:  # S3's limit for a presigned URL
        raise ValueError("expected at most 604800 seconds (7 days)")
    return number


_PREFETCH_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "interval": _seconds,
    "cron": _optional(_cron),
    "projects": _names,
    "requirements": _names,
    "authors": _people,
    "maintainers": _people,
    "method": _choice("auto", "xmlrpc", "json-root", "per-project"),
    "workers": _int(1, 256),  # prefetch.workers
    "xmlrpc_url": _optional(_upstream),
    "platforms": _names,
    "python_versions": _names,
    "packagetypes": _packagetypes,
    "prereleases": _bool,
    "latest_versions": _optional(_int(1, 1_000_000)),
    "max_file_size": _optional(parse_size),
    "max_attempts": _int(1, 100),
    "gone_recheck": _seconds,
    "root_deadline": _optional(_positive_seconds),
    "max_root_size": parse_size,
}
assert set(_PREFETCH_CONVERTERS) == {f.name for f in dataclasses.fields(PrefetchSettings)}

_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "host": _text,
    "port": _int(0, 65535),
    "upstream": _simple_index,
    "cache_dir": lambda v: Path(str(v)).expanduser(),
    "storage": _optional(_storage),
    "s3_endpoint": _optional(_endpoint),
    "s3_region": _optional(_text),
    "s3_access_key_id": _optional(_text),
    "s3_secret_access_key": _optional(_text),
    "s3_secret_access_key_file": _optional(_text),
    "s3_redirect": _bool,
    "s3_redirect_expiry": _redirect_expiry,
    "local_copies_size": _optional(_positive_size),
    "offline": _bool,
    "index_ttl": _seconds,
    "negative_ttl": _seconds,
    "max_cache_size": _optional(parse_size),
    "scrub_interval": _optional(_seconds),
    "memory_cache_size": parse_size,
    "workers": _auto_or(default_workers, _int(1, 64)),
    "connect_timeout": _seconds,
    "read_timeout": _seconds,
    "retries": _int(0, 10),
    "breaker_threshold": _int(0, 1000),
    "breaker_reset": _seconds,
    "ca_bundle": _optional(_text),
    "allowed_file_hosts": _origin_patterns,
    "allowed_private_networks": _networks,
    "max_redirects": _int(0, 20),
    "max_page_size": _positive_size,
    "max_page_inflated": _positive_size,
    "upstream_deadline": _positive_seconds,
    "page_connections": _int(1, 1000),
    "file_connections": _int(1, 10000),
    "user_agent": _optional(_text),
    "admin_token": _optional(_text),
    "admin_token_file": _optional(_text),
    "auth_htpasswd": _optional(_text),
    "auth_tokens": _names,
    "auth_check_threads": _int(1, 64),
    "auth_max_pending": _int(1, 100_000),
    "auth_tokens_file": _optional(_text),
    "upstream_password_file": _optional(_text),
    "tls_certfile": _optional(_text),
    "tls_keyfile": _optional(_text),
    "log_level": _log_level,
    "log_format": _choice("text", "json"),
    "access_log": _bool,
    "idle_timeout": _positive_seconds,
    "head_timeout": _positive_seconds,
    "max_head_size": _size_between(4 * 1024, 16 * 1024**2),
    "max_connections": _int(1, 1_000_000),
    "send_timeout": _positive_seconds,
    "shutdown_grace": _seconds,
    "accel_redirect": _optional(_accel_prefix),
    "wheel_metadata": _bool,
    "prefetch": lambda v: v,  # merged key by key in _apply_prefetch
}
assert set(_CONVERTERS) == {f.name for f in dataclasses.fields(Settings)}


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
        _convert_into(section, _PREFETCH_CONVERTERS, key, raw, where, "prefetch.")


def _apply(values: dict[str, Any], source: Mapping[str, Any], where: str) -> None:
    for key, raw in source.items():
        name = str(key).replace("-", "_")
        if name == "prefetch":
            if raw is not None:
                _apply_prefetch(values, raw, where)
        elif name.startswith("prefetch__"):
            _apply_prefetch(values, {name[len("prefetch__") :]: raw}, where)
        else:
            _convert_into(values, _CONVERTERS, key, raw, where)


# A setting naming a file that holds a secret, and the setting it fills: secrets given this way
# appear neither on a command line nor in an environment, which other local processes can read.
SECRET_FILES = {
    "admin_token_file": "admin_token",
    "auth_tokens_file": "auth_tokens",
    "upstream_password_file": "upstream",
    "s3_secret_access_key_file": "s3_secret_access_key",
}


def _read_secret(key: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"invalid setting {key!r}: cannot read {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(f"invalid setting {key!r}: {path} is not UTF-8 text") from None
    # Editors and `echo` end a file with a newline; it is never part of the secret.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise SettingsError(f"invalid setting {key!r}: {path} is empty")
    return text


def _with_password(upstream: str, password: str) -> str:
    parts = urlsplit(upstream)
    if not parts.username or parts.password is not None:
        raise SettingsError(
            "invalid setting 'upstream_password_file': 'upstream' must name a user and no "
            "password (https://user@host/simple/)"
        )
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _resolve_secret_files(values: dict[str, Any]) -> None:
    """Fill each secret from its file; giving both the secret and its file is an error."""
    for file_key, target in SECRET_FILES.items():
        path = values.get(file_key)
        if path is None:
            continue
        secret = _read_secret(file_key, path)
        if target == "upstream":
            values[target] = _with_password(values.get(target) or default_upstream(), secret)
            continue
        if values.get(target):
            raise SettingsError(
                f"invalid setting {file_key!r}: give {target} or {file_key}, not both"
            )
        if target == "auth_tokens":
            lines = (line.strip() for line in secret.splitlines())
            values[target] = tuple(line for line in lines if line and not line.startswith("#"))
        else:
            values[target] = secret


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
    known = set(_CONVERTERS) | {"prefetch"}
    from_env = settings_from_environment(env, ENV_PREFIX, known, skip=(ENV_PREFIX + "CONFIG",))
    _apply(values, from_env, "environment (PYPI_PROXY_*)")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    _resolve_secret_files(values)
    return _build(values)
