"""The distributions the look-alike upstream serves.

- ``real_tree()``: the wheels that ``bench/tree.txt`` resolves to (40 projects), fetched once
  with ``pip download`` into ``.cache/bench/tree-<stamp>`` and reused while tree.txt, the
  interpreter and the platform are unchanged.
- ``write_wheel()``: a small, real, deterministic wheel written to disk (the 1,200-file page,
  the 3 MB and 20 MB files, the prefetch projects), built in the bench's own code so bench/
  needs nothing from the tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

from bench.servers import CACHE, ROOT

TREE_FILE = ROOT / "bench" / "tree.txt"
_FIXED_TIME = (2024, 1, 1, 0, 0, 0)


def requirements() -> list[str]:
    lines = TREE_FILE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def real_tree() -> Path:
    """The directory of the tree's wheels, downloaded on first use (and when tree.txt changes).

    Downloaded into a temporary directory renamed into place when complete: an interrupted
    download is never served as the tree."""
    # The wheels pip picks depend on the interpreter and platform as well as on tree.txt.
    target = f"{sys.version_info[0]}.{sys.version_info[1]} {sysconfig.get_platform()}\n"
    stamp = hashlib.sha256(target.encode() + TREE_FILE.read_bytes()).hexdigest()[:16]
    tree = CACHE / f"tree-{stamp}"
    if tree.is_dir():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f".tree-{stamp}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"fetching the tree's wheels into {tree} (once)", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "-d",
            str(partial),
            *requirements(),
        ],
        check=True,
    )
    partial.rename(tree)
    return tree


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(
    directory: Path, name: str, version: str, payload_size: int = 0, mtime: float | None = None
) -> Path:
    """``name``-``version``-py3-none-any.whl in ``directory``: a module, METADATA, WHEEL and
    RECORD; ``payload_size`` seeded random bytes (they do not compress) make it that big."""
    escaped = str(canonicalize_name(name)).replace("-", "_")
    dist_info = f"{escaped}-{version}.dist-info"
    members = {
        f"{escaped}/__init__.py": f"__version__ = {version!r}\n".encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Python: >=3.8\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if payload_size:
        # In pieces: randbytes() takes at most 256 MB at a time.
        rng, piece = random.Random(f"{name}-{version}"), 16 * 1024 * 1024
        members[f"{escaped}/payload.bin"] = b"".join(
            rng.randbytes(min(piece, payload_size - start))
            for start in range(0, payload_size, piece)
        )
    record = [_record_line(path, data) for path, data in members.items()]
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    target = directory / f"{escaped}-{version}-py3-none-any.whl"
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in members.items():
            wheel.writestr(zipfile.ZipInfo(path, _FIXED_TIME), data)
    partial.rename(target)
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return target
