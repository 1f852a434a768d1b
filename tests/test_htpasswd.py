"""htpasswd parsing: the schemes accepted, the ones refused and how they are named."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import bcrypt
import pytest

from proxy.errors import HtpasswdError
from proxy.htpasswd import Entry, dummy_entry, load_htpasswd, parse_htpasswd

BCRYPT_Y = bcrypt.hashpw(b"bcrypt-pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
SHA = "{SHA}" + base64.b64encode(hashlib.sha1(b"sha-pw").digest()).decode()
DES = "rl0uE2NdX0dpc"  # crypt(3) DES, as `htpasswd -d` writes


def test_parse__accepted_schemes_check_passwords() -> None:
    parsed = parse_htpasswd(f"# users\nalice:{BCRYPT_Y}\n\nbob:{SHA}\n")
    assert set(parsed.users) == {"alice", "bob"}
    assert parsed.refused == {}
    assert parsed.users["alice"].verify("bcrypt-pw")
    assert not parsed.users["alice"].verify("nope")
    assert parsed.users["bob"].verify("sha-pw")
    assert not parsed.users["bob"].verify("sha-pW")


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ("$apr1$x$y", "apr1-MD5"),
        (DES, "DES-crypt or plain text"),
        ("plaintext-password", "plain text or an unknown hash"),
        ("$6$salt$hash", "SHA-512-crypt"),
        ("$5$salt$hash", "SHA-256-crypt"),
        ("$1$salt$hash", "MD5-crypt"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "argon2id"),
        ("$2y$12$tooshort", "bcrypt (malformed)"),
        ("$2y$03$" + "a" * 53, "bcrypt (malformed)"),  # below bcrypt's minimum cost
        ("{SHA}short", "{SHA} (malformed)"),
        ("{SSHA}abc", "{SSHA}"),
        ("", "plain text or an unknown hash"),
    ],
)
def test_parse__other_schemes_refused_and_named(stored: str, named: str) -> None:
    parsed = parse_htpasswd(f"carol:{stored}\nalice:{BCRYPT_Y}\n")
    assert set(parsed.users) == {"alice"}
    assert parsed.refused == {named: ("carol",)}


def test_parse__a_refused_line_replaces_an_earlier_good_one() -> None:
    parsed = parse_htpasswd(f"alice:{BCRYPT_Y}\nalice:{DES}\n")
    assert parsed.users == {}


def test_verify__bcrypt_reads_72_bytes_as_htpasswd_does() -> None:
    long = "x" * 72
    entry = parse_htpasswd("u:" + bcrypt.hashpw(long.encode(), bcrypt.gensalt(4)).decode())
    assert entry.users["u"].verify(long + "ignored past 72 bytes")
    assert not entry.users["u"].verify("x" * 71)


def _seconds_for_wrong_passwords(entry: Entry) -> float:
    start = time.perf_counter()
    for i in range(3):
        assert not entry.verify(f"wrong{i}")
    return time.perf_counter() - start


def test_dummy__costs_what_the_real_entry_costs() -> None:
    real = parse_htpasswd("u:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()).users["u"]
    dummy = dummy_entry(10)
    assert dummy.cost == 10 and not dummy.verify("pw") and not dummy.verify("")
    assert _seconds_for_wrong_passwords(dummy) > 0.5 * _seconds_for_wrong_passwords(real)
    assert dummy_entry(None).scheme == "sha1"


def test_load__not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_bytes(f"alice:{BCRYPT_Y}\nb\xf6b:{SHA}\n".encode("latin-1"))
    with pytest.raises(HtpasswdError, match="not UTF-8 \\(line 2\\)"):
        load_htpasswd(path)
