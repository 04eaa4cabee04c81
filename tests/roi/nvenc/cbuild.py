"""Compiling C against Debian's NVENC header (libffmpeg-nvenc-dev) for the NVENC tests.

No NVIDIA GPU or driver is needed: the layout test checks the ctypes binding against the
header, and the fake driver (fake_driver.c) stands in for libnvidia-encode.so.1/libcuda.so.1.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HEADER = Path("/usr/include/ffnvcodec/nvEncodeAPI.h")
HERE = Path(__file__).parent


def require_toolchain() -> str:
    """gcc's path; skips the test (with the reason) when gcc or the header is missing."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (scripts/system-deps.sh installs it)")
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is missing: install libffmpeg-nvenc-dev (scripts/system-deps.sh)")
    return gcc


def compile_c(sources: list[Path], output: Path, *, shared: bool = False) -> Path:
    gcc = require_toolchain()
    args = [gcc, "-std=c11", "-O1", "-Wall", "-Werror", "-Wno-deprecated-declarations"]
    if shared:
        args += ["-shared", "-fPIC"]
    args += [str(s) for s in sources] + ["-o", str(output)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"gcc failed:\n{done.stderr}")
    return output
