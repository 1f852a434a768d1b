"""Secrets read from files: a setting naming a file fills the setting it stands for.

Secrets given this way appear neither on a command line nor in an environment, which other
local processes can read (``ps``, ``/proc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from proxy.errors import SettingsError
from proxy.settingvalues import default_upstream

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


def resolve_secret_files(values: dict[str, Any]) -> None:
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
