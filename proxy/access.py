"""Who may use the proxy: HTTP Basic users from an htpasswd file, and bearer tokens.

htpasswd lines are ``user:hash`` with bcrypt (``$2y$``/``$2b$``/``$2a$``, as ``htpasswd -B``
writes), ``{SHA}`` (``htpasswd -s``) or, for tests only, plain text. The file is re-read when
it changes. A bcrypt check costs ~100 ms, so a verified pair is remembered (by its digest).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import bcrypt

log = logging.getLogger(__name__)
MAX_REMEMBERED = 10_000


def check_password(password: str, stored: str) -> bool:
    if stored.startswith(("$2y$", "$2b$", "$2a$")):
        try:
            return bcrypt.checkpw(password.encode(), ("$2b$" + stored[4:]).encode())
        except ValueError:
            return False
    if stored.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # noqa: S324
        return hmac.compare_digest(digest, stored[5:])
    if stored.startswith("$"):
        return False  # a scheme we do not support (apr1, crypt): never matches
    return hmac.compare_digest(password.encode(), stored.encode())


def parse_htpasswd(text: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            user, _, stored = line.partition(":")
            users[user] = stored
    return users


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        # A non-ASCII str raises a plain ValueError, not binascii.Error.
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Access:
    def __init__(self, htpasswd: Path | None, tokens: Sequence[str]) -> None:
        self._path = htpasswd
        self._tokens = [t.encode() for t in tokens if t]
        self._users: dict[str, str] = {}
        self._mtime: float | None = None
        self._verified: set[bytes] = set()
        self._reload()

    @property
    def enabled(self) -> bool:
        return self._path is not None or bool(self._tokens)

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError as exc:
            log.error("cannot read htpasswd file %s: %s", self._path, exc.strerror)
            self._users = {}
            return
        if mtime != self._mtime:
            self._users = parse_htpasswd(self._path.read_text(encoding="utf-8"))
            self._mtime = mtime
            self._verified.clear()

    def allows(self, authorization: str | None) -> bool:
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip().encode()
            return any(hmac.compare_digest(given, token) for token in self._tokens)
        credentials = basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        # pip and uv also send a token as the password of any user name.
        if any(hmac.compare_digest(password.encode(), token) for token in self._tokens):
            return True
        self._reload()
        stored = self._users.get(user)
        if stored is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}\0{stored}".encode()).digest()
        if key in self._verified:
            return True
        if check_password(password, stored):
            if len(self._verified) > MAX_REMEMBERED:
                self._verified.clear()
            self._verified.add(key)
            return True
        return False
