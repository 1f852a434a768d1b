"""htpasswd files: which lines are users this proxy can check, and checking a password.

Accepted, one ``user:hash`` a line: bcrypt (``$2y$``/``$2b$``/``$2a$``, as ``htpasswd -B``
writes) and ``{SHA}`` (``htpasswd -s``). Every other form is refused: apr1-MD5 (what
``htpasswd`` writes without ``-B``), crypt(3) DES, SHA-crypt, argon2 and plain text. Plain text
is refused on purpose, with no marker to turn it on: a value without a known prefix may be a
hash of a scheme we do not know, and comparing it as plain text made a DES-crypt hash work as
its own password. A refused line's user cannot log in; ``parse_htpasswd`` names the refused
schemes so the caller can say so once, when it loads the file.

Pure but for ``load_htpasswd`` (one read) and the hashing in ``Entry.verify``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from proxy.errors import HtpasswdError  # the file cannot be used at all: nobody logs in

_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_SHA = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
_DES = re.compile(r"[./0-9A-Za-z]{13}")
BCRYPT_MAX_PASSWORD = 72  # bytes; bcrypt ignores the rest, and htpasswd -B hashed only these
_CRYPT_IDS = {
    "1": "MD5-crypt",
    "5": "SHA-256-crypt",
    "6": "SHA-512-crypt",
    "apr1": "apr1-MD5",
    "y": "yescrypt",
    "gy": "gost-yescrypt",
    "7": "scrypt",
    "sha1": "SHA1-crypt",
    "md5": "Sun-MD5",
}


@dataclass(frozen=True, slots=True)
class Entry:
    scheme: str  # "bcrypt" or "sha1"
    secret: bytes  # bcrypt: the whole hash; sha1: the 20-byte digest
    cost: int = 0  # bcrypt's log2 rounds

    def verify(self, password: str) -> bool:
        data = password.encode()
        if self.scheme == "bcrypt":
            try:
                return bcrypt.checkpw(data[:BCRYPT_MAX_PASSWORD], self.secret)
            except ValueError:
                return False
        digest = hashlib.sha1(data).digest()  # noqa: S324 - the scheme htpasswd -s writes
        return hmac.compare_digest(digest, self.secret)


def dummy_entry(cost: int | None) -> Entry:
    """An entry no password matches that costs what a real one of ``cost`` costs (None: a
    {SHA} entry), checked for unknown users so a wrong name takes as long as a wrong password.

    Made with 4 rounds, then relabelled: bcrypt reads the cost from the hash it is given."""
    if cost is None:
        return Entry("sha1", os.urandom(20))
    made = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=4))
    return Entry("bcrypt", b"$2b$%02d$" % cost + made[7:], cost)


def scheme_of(stored: str) -> str:
    """A name for the scheme of a stored value we refuse, for the log."""
    if stored.startswith("$2"):
        return "bcrypt (malformed)"
    if stored.startswith("$"):
        ident = stored[1:].partition("$")[0]
        if ident.startswith("argon2"):
            return ident
        return _CRYPT_IDS.get(ident, f"${ident}$ (unknown)")
    if stored.startswith("{"):
        prefix = stored.partition("}")[0] + "}"
        return "{SHA} (malformed)" if prefix == "{SHA}" else prefix
    if _DES.fullmatch(stored):
        return "DES-crypt or plain text"
    return "plain text or an unknown hash"


def parse_entry(stored: str) -> Entry | None:
    match = _BCRYPT.fullmatch(stored)
    if match is not None and 4 <= int(match.group(1)) <= 31:
        return Entry("bcrypt", stored.encode(), int(match.group(1)))
    if _SHA.fullmatch(stored):
        return Entry("sha1", base64.b64decode(stored[5:]))
    return None


@dataclass(frozen=True)
class Htpasswd:
    users: Mapping[str, Entry] = field(default_factory=dict)
    refused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # scheme -> users

    def dummy(self) -> Entry:
        costs = [entry.cost for entry in self.users.values() if entry.scheme == "bcrypt"]
        return dummy_entry(max(costs) if costs else None)


def parse_htpasswd(text: str) -> Htpasswd:
    users: dict[str, Entry] = {}
    refused: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, stored = line.partition(":")
        entry = parse_entry(stored.strip())
        if entry is None:
            users.pop(user, None)  # a later refused line replaces an earlier good one
            refused.setdefault(scheme_of(stored.strip()), []).append(user)
        else:
            users[user] = entry
    return Htpasswd(users, {scheme: tuple(names) for scheme, names in refused.items()})


def load_htpasswd(path: Path) -> Htpasswd:
    """Read and parse; OSError when unreadable, HtpasswdError when not UTF-8."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise HtpasswdError(f"htpasswd file {path} is not UTF-8 (line {line})") from None
    return parse_htpasswd(text)
