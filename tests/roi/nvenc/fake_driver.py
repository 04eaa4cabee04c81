"""The fake NVIDIA driver for the NVENC tests: fake/fake_cuda.c and fake/fake_nvenc.c, built
with gcc against Debian's NVENC header into ``libcuda.so.1`` and ``libnvidia-encode.so.1``.

No GPU is used anywhere: the fake records every call (JSON lines) and answers each picture
with a real access unit, pre-encoded here with libx264/libx265 as all-IDR pictures so that
any of them decodes on its own.
"""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from app.media.nal import join_annexb, nal_type, split_annexb
from tests.roi.nvenc.cbuild import HERE, compile_c

FAKE = HERE / "fake"
PARAMETER_SET_TYPES = {"h264": {7, 8}, "hevc": {32, 33, 34}}


def build_fake_driver(directory: Path) -> Path:
    """Builds both fake libraries into ``directory`` (returned)."""
    directory.mkdir(parents=True, exist_ok=True)
    compile_c([FAKE / "fake_cuda.c"], directory / "libcuda.so.1", shared=True)
    compile_c([FAKE / "fake_nvenc.c"], directory / "libnvidia-encode.so.1", shared=True)
    return directory


def write_stream(path: Path, codec: str, width: int, height: int, frames: int = 8) -> Path:
    """The file the fake answers from: parameter sets, then ``frames`` IDR access units."""
    name = "libx264" if codec == "h264" else "libx265"
    context = av.CodecContext.create(name, "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 30)
    context.gop_size = 1
    context.options = {"preset": "ultrafast", "tune": "zerolatency"}
    if codec == "hevc":
        context.options = {**context.options, "x265-params": "keyint=1:log-level=error"}
    context.open()
    rng = np.random.default_rng(7)
    units: list[bytes] = []
    for index in range(frames):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        units += [bytes(p) for p in context.encode(frame)]
    units += [bytes(p) for p in context.encode(None)]
    nals = split_annexb(units[0])
    parameter_sets = join_annexb(
        n
        for n in nals
        if nal_type(n, codec) in PARAMETER_SET_TYPES[codec]  # type: ignore[arg-type]
    )
    with path.open("wb") as out:
        for unit in [parameter_sets, *units]:
            out.write(struct.pack("<I", len(unit)) + unit)
    return path


def read_calls(log: Path, name: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [c for c in calls if name is None or c["call"] == name]


def signed_map(hex_map: str) -> list[int]:
    return [b - 256 if b > 127 else b for b in bytes.fromhex(hex_map)]
