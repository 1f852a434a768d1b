"""Who may use the proxy: HTTP Basic users from an htpasswd file, and bearer tokens.

Deciding is split so that nothing slow runs on the event loop. ``quick`` answers at once
whatever needs no hashing: no or odd credentials, a bearer token, a token given as the Basic
password (as pip and uv send one), and a user/password pair seen before, right or wrong (both
remembered, by a keyed digest, so a client repeating a wrong pair costs nothing). Otherwise it
returns a ``PasswordCheck`` for ``check``, which hashes (a bcrypt check costs ~250 ms at cost
12) and must run in a thread; the web layer bounds how many run and wait.

A name not in the file is checked against a dummy entry as costly as the costliest real one,
so a wrong user name takes as long as a wrong password. The file is re-read when it changes
(``refresh``, at most once per ``REFRESH_EVERY`` when asked through ``refresh_due``). An
unreadable or non-UTF-8 file is logged once, not per request, and fails closed: no Basic user
gets in until it is fixed. See proxy/htpasswd.py for the schemes accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.errors import HtpasswdError
from proxy.htpasswd import Entry, Htpasswd, load_htpasswd

log = logging.getLogger(__name__)
MAX_REMEMBERED = 10_000  # pairs remembered as right, and as many as wrong
REFRESH_EVERY = 1.0  # seconds between looks at the htpasswd file's stat


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


class _Remembered:
    """A bounded set of digests, oldest dropped first; safe across threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._keys: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            while len(self._keys) > self._limit:
                del self._keys[next(iter(self._keys))]


@dataclass
class _Table:
    """One load of the file, with what was learnt about it; replaced whole on reload."""

    htpasswd: Htpasswd
    dummy: Entry
    right: _Remembered = field(default_factory=lambda: _Remembered(MAX_REMEMBERED))
    wrong: _Remembered = field(default_factory=lambda: _Remembered(MAX_REMEMBERED))


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """A Basic pair that needs hashing: give it to ``Access.check`` in a thread."""

    user: str
    password: str
    key: bytes
    table: _Table


class Access:
    def __init__(self, htpasswd: Path | None, tokens: Sequence[str]) -> None:
        self._path = htpasswd
        self._tokens = [t.encode() for t in tokens if t]
        self._salt = secrets.token_bytes(32)  # digests of passwords are useless outside
        self._table = _Table(Htpasswd(), Htpasswd().dummy())
        self._stamp: tuple[int, int, int] | None = None
        self._problem: str | None = None
        self._next_refresh = 0.0
        self._refresh_lock = threading.Lock()
        self.refresh()

    @property
    def enabled(self) -> bool:
        return self._path is not None or bool(self._tokens)

    def refresh_due(self, now: float) -> bool:
        """Whether to call ``refresh`` now (from the event loop: no I/O; claims the slot)."""
        if self._path is None or now < self._next_refresh:
            return False
        self._next_refresh = now + REFRESH_EVERY
        return True

    def refresh(self) -> None:
        """Re-read the file if it changed (blocking I/O: call it off the event loop)."""
        if self._path is None:
            return
        with self._refresh_lock:
            try:
                st = os.stat(self._path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp == self._stamp:
                    return
                loaded = load_htpasswd(self._path)
            except OSError as exc:
                self._fail(f"cannot read htpasswd file {self._path}: {exc.strerror}", None)
                return
            except HtpasswdError as exc:
                self._fail(str(exc), stamp)
                return
            self._stamp = stamp
            self._table = _Table(loaded, loaded.dummy())
            if self._problem is not None:
                log.warning("htpasswd file %s can be used again", self._path)
                self._problem = None
            for scheme, users in loaded.refused.items():
                log.warning(
                    "htpasswd file %s: refused %d entries using %s (%s): those users cannot "
                    "log in; use bcrypt (htpasswd -B)",
                    self._path,
                    len(users),
                    scheme,
                    ", ".join(users[:5]) + (", ..." if len(users) > 5 else ""),
                )

    def _fail(self, problem: str, stamp: tuple[int, int, int] | None) -> None:
        # Fail closed, and keep the dummy: an unknown user still costs what it did.
        self._table = _Table(Htpasswd(), self._table.dummy)
        self._stamp = stamp
        if problem != self._problem:
            log.error("%s; no Basic user can log in until it is fixed", problem)
            self._problem = problem

    def _token(self, given: str) -> bool:
        data = given.encode()
        return any(hmac.compare_digest(data, token) for token in self._tokens)

    def quick(self, authorization: str | None) -> bool | PasswordCheck:
        """The answer when it needs no hashing, else the check to run in a thread."""
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self._token(value.strip())
        credentials = basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        if self._token(password):
            return True
        if self._path is None:
            return False
        table = self._table
        key = hmac.digest(self._salt, f"{user}\0{password}".encode(), hashlib.sha256)
        if key in table.right:
            return True
        if key in table.wrong:
            return False
        return PasswordCheck(user, password, key, table)

    def check(self, pending: PasswordCheck) -> bool:
        """Hash and remember the outcome (slow: call it in a thread)."""
        table = pending.table
        entry = table.htpasswd.users.get(pending.user)
        ok = (entry or table.dummy).verify(pending.password) and entry is not None
        (table.right if ok else table.wrong).add(pending.key)
        return ok

    def allows(self, authorization: str | None) -> bool:
        """The whole decision at once, blocking (tests, scripts)."""
        self.refresh()
        verdict = self.quick(authorization)
        return verdict if isinstance(verdict, bool) else self.check(verdict)
