"""What each setting's value may be: one converter per key, from YAML, an environment
variable or a flag alike (a string or the YAML type), to the type ``Settings`` holds.

A converter raises ValueError (or TypeError) with what was expected; ``proxy.settings`` turns
that into one SettingsError line naming the key. ``proxy.settings`` also checks that these
tables name every field of ``Settings`` and ``PrefetchSettings``, no more.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import SettingsError
from proxy.origins import parse_pattern
from proxy.s3config import is_s3_url, s3_config_from


def default_upstream() -> str:
    """The public index's simple API, from the library that names it. Imported only when no
    upstream is set: pypi_simple brings requests and bs4, half of a command's start time."""
    from pypi_simple import PYPI_SIMPLE_ENDPOINT

    return str(PYPI_SIMPLE_ENDPOINT)


def default_workers() -> int:
    """``workers: auto``: one per core this process may run on (a hot hit is CPU-bound, and a
    worker costs about 70 MB of memory)."""
    try:
        return max(1, min(64, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(64, os.cpu_count() or 1))


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


PREFETCH_CONVERTERS: dict[str, Callable[[Any], Any]] = {
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

CONVERTERS: dict[str, Callable[[Any], Any]] = {
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
    "memory_files_size": parse_size,
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
