"""Tiny but real distributions, built in memory: pip and uv install these wheels.

Everything is deterministic (fixed timestamps, a payload seeded from name and version), so the
same call always gives the same bytes and the same sha256.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name

_FIXED_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Built:
    filename: str
    content: bytes
    metadata: bytes
    # Computed once: pages hash every file on every render, and payloads can be many MB.
    sha256: str = field(init=False)
    metadata_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.content).hexdigest())
        object.__setattr__(self, "metadata_sha256", hashlib.sha256(self.metadata).hexdigest())


def escaped_name(name: str) -> str:
    """The name as wheel and sdist filenames spell it: normalized, with ``_`` for ``-``."""
    return str(canonicalize_name(name)).replace("-", "_")


def _metadata(
    name: str, version: str, requires: Sequence[str], requires_python: str | None
) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n").encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _payload(name: str, version: str, size: int) -> bytes:
    # Seeded random bytes do not compress, so a wheel really is about ``size`` bytes long.
    return random.Random(f"{name}-{version}").randbytes(size)


def make_wheel(
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    payload_size: int = 0,
) -> Built:
    """A pure-python ``py3-none-any`` wheel; ``payload_size`` adds incompressible bytes."""
    module = escaped_name(name)
    dist_info = f"{module}-{version}.dist-info"
    metadata = _metadata(name, version, requires, requires_python)
    files: dict[str, bytes] = {f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode()}
    if payload_size:
        files[f"{module}/payload.bin"] = _payload(name, version, payload_size)
    files[f"{dist_info}/METADATA"] = metadata
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pypi-proxy-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16  # rw-r--r--, whatever the umask of the builder
            # Deflating random bytes only costs time.
            stored = path.endswith(".bin")
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return Built(f"{module}-{version}-py3-none-any.whl", buffer.getvalue(), metadata)


def make_sdist(
    name: str,
    version: str,
    *,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
) -> Built:
    """A ``.tar.gz`` sdist with PKG-INFO (its ``metadata``): downloadable, not meant to be built."""
    module = escaped_name(name)
    base = f"{module}-{version}"
    pkg_info = _metadata(name, version, requires, requires_python)
    members = {
        f"{base}/PKG-INFO": pkg_info,
        f"{base}/pyproject.toml": (
            b'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        ),
        f"{base}/{module}/__init__.py": f'__version__ = "{version}"\n'.encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    # gzip with a fixed mtime, so the same sdist always has the same sha256.
    return Built(f"{base}.tar.gz", gzip.compress(buffer.getvalue(), mtime=0), pkg_info)


def foreign_wheel(filename: str, dist_info: str) -> Built:
    """A wheel named ``filename`` whose only METADATA is in ``dist_info``."""
    metadata = b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\nRequires-Dist: evil-dep\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("demo/__init__.py", b"")
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\n")
    return Built(filename, buffer.getvalue(), metadata)
