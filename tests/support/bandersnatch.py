"""bandersnatch, the public index's own mirroring client, run as a subprocess against a proxy.

bandersnatch 8 needs Python 3.12 or newer, which the project's own interpreter may not be: a
venv is made once with the newest such interpreter found, kept under ``.cache/`` in the
checkout (named for the interpreter's version and bandersnatch's major version), and reused.
It is built under a temporary name and renamed into place only once bandersnatch imports, so
an interrupted install is never taken for a working one.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REQUIREMENT = "bandersnatch>=8,<9"
MAJOR = "8"
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
_NAMES = ("python3.15", "python3.14", "python3.13", "python3.12", "python3")


class NoPython(RuntimeError):
    """No Python 3.12+ on this machine: bandersnatch 8 cannot run."""


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None  # a pyenv shim for a version that is not selected, say
    return int(parts[0]), int(parts[1])


def find_python(
    current: str | None = None, path: str | None = None, pyenv_root: Path | None = None
) -> tuple[str, tuple[int, int]]:
    """The newest Python 3.12+ here: this interpreter, then PATH, then pyenv's versions
    (each place defaults to this machine's); NoPython when there is none."""
    candidates = [current or sys.executable]
    candidates += [found for name in _NAMES if (found := shutil.which(name, path=path))]
    root = pyenv_root or Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    pyenv = root / "versions"
    candidates += sorted(glob.glob(str(pyenv / "*" / "bin" / "python3.1[2-9]")))
    best: tuple[str, tuple[int, int]] | None = None
    for python in dict.fromkeys(candidates):
        version = _version(python)
        if version is not None and version >= (3, 12) and (best is None or version > best[1]):
            best = (python, version)
    if best is None:
        raise NoPython(
            "bandersnatch 8 needs Python 3.12 or newer and none was found (looked at "
            f"{candidates[0]}, {', '.join(_NAMES)} on PATH and {pyenv}/*/bin): install one "
            "(e.g. `apt-get install python3.12` or `pyenv install 3.12`) to run this test"
        )
    return best


def bandersnatch_python() -> Path:
    """The python of a venv with bandersnatch 8 installed, made on first use."""
    python, (major, minor) = find_python()
    venv = CACHE / f"bandersnatch{MAJOR}-venv-py{major}.{minor}"
    ready = venv / "bin" / "python"
    if ready.exists():
        return ready
    CACHE.mkdir(exist_ok=True)
    building = CACHE / f".{venv.name}.{os.getpid()}.{time.monotonic_ns()}"
    inside = str(building / "bin" / "python")
    try:
        # The machine's own pip configuration applies: this is an install, not a test client.
        for step in (
            [python, "-m", "venv", str(building)],
            [inside, "-m", "pip", "install", "--quiet", REQUIREMENT],
            [inside, "-c", "import bandersnatch.main"],
        ):
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(
                    f"could not install {REQUIREMENT} with {python} (`{' '.join(step)}` "
                    f"exited {done.returncode}):\n{done.stdout}{done.stderr}"
                )
        # Only `bin/python -m ...` is used, which works from the renamed directory (the
        # scripts' shebangs would not).
        try:
            building.rename(venv)
        except OSError:  # another run finished first: use its venv
            if not ready.exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return ready


@dataclass(frozen=True)
class Run:
    returncode: int
    log: str
    seconds: float


def write_config(path: Path, master: str, directory: Path, *, workers: int = 2) -> Path:
    # Option names as bandersnatch 8.2 reads them (bandersnatch/defaults.conf, mirror.py).
    path.write_text(
        "[mirror]\n"
        f"directory = {directory}\n"
        f"master = {master}\n"
        "allow-non-https = true\n"
        "json = true\n"
        "release-files = true\n"
        "core-metadata = true\n"
        "hash-index = false\n"
        "simple-format = ALL\n"
        "compare-method = hash\n"
        "digest_name = sha256\n"
        f"workers = {workers}\n"
        "timeout = 20\n"
        "global-timeout = 600\n"
        # An error must show as a failed run, not as exit 0 with the serial left behind.
        "stop-on-error = true\n"
    )
    return path


def mirror(python: Path, config: Path) -> Run:
    """``bandersnatch mirror``, with no proxy from this machine's environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(python), "-m", "bandersnatch", "--config", str(config), "mirror"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)
