"""Tiny but real distributions, built in memory: pip and uv install these wheels."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from dataclasses import dataclass

from packaging.utils import canonicalize_name

_FIXED_TIME = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Built:
    filename: str
    content: bytes
    metadata: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()


def _escaped(name: str) -> str:
    return str(canonicalize_name(name)).replace("-", "_")


def _metadata(name: str, version: str, requires: list[str], requires_python: str | None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n").encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    name: str,
    version: str,
    *,
    requires: list[str] | None = None,
    requires_python: str | None = None,
    payload_size: int = 0,
) -> Built:
    """A pure-python ``py3-none-any`` wheel; ``payload_size`` adds incompressible bytes."""
    module = _escaped(name)
    dist_info = f"{module}-{version}.dist-info"
    metadata = _metadata(name, version, requires or [], requires_python)
    files: dict[str, bytes] = {f"{module}/__init__.py": f'__version__ = "{version}"\n'.encode()}
    if payload_size:
        rng = random.Random(f"{name}-{version}")
        files[f"{module}/payload.bin"] = rng.randbytes(payload_size)
    files[f"{dist_info}/METADATA"] = metadata
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: pypi-proxy-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(path, data) for path, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=_FIXED_TIME)
            info.compress_type = (
                zipfile.ZIP_STORED if path.endswith(".bin") else zipfile.ZIP_DEFLATED
            )
            archive.writestr(info, data)
    return Built(f"{module}-{version}-py3-none-any.whl", buffer.getvalue(), metadata)


def make_sdist(name: str, version: str) -> Built:
    """A ``.tar.gz`` sdist with PKG-INFO: downloadable, not meant to be built."""
    base = f"{_escaped(name)}-{version}"
    pkg_info = _metadata(name, version, [], None)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size, info.mtime = len(pkg_info), 0
        archive.addfile(info, io.BytesIO(pkg_info))
    # gzip with a fixed mtime, so the same sdist always has the same sha256.
    return Built(f"{base}.tar.gz", gzip.compress(buffer.getvalue(), mtime=0), pkg_info)
