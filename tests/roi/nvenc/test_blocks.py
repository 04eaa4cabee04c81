"""One region-to-blocks rule: the NVENC delta-QP map boosts exactly the blocks libx264 boosts.

The x264 side is the real thing: the project's x264 path (RoiSideData -> FFmpeg's libx264
wrapper) encodes noise with CRF and a negligible AQ strength, so every macroblock is coded and
its QP is the frame's QP plus the ROI offset alone; FFmpeg's decoder exports the per-MB QPs
(``export_side_data=venc_params``). The NVENC side is app/roi/blocks.py, the function the
NVENC backend builds every picture's map with. For HEVC (32x32 CTBs) the map must boost
exactly the CTBs holding a macroblock x264 boosts.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from app.roi import blocks
from app.roi.encode import RoiSideData
from app.roi.regions import Region, effective_regions

CASES = [
    (320, 240, [Region(20, 40, 70, 90, -10), Region(50, 60, 130, 200, -4)]),  # overlap
    (200, 120, [Region(100, 180, 120, 200, 5), Region(33, 47, 34, 48, -8)]),  # edges, 1 px
    (320, 240, [Region(0, 0, 16, 16, -3), Region(16, 16, 48, 80, -12), Region(7, 300, 9, 320, 4)]),
    (200, 120, []),
]


def x264_offsets(width: int, height: int, regions: list[Region]) -> np.ndarray:
    """Per-macroblock QP offsets libx264 applied for ``regions`` (rows x columns)."""
    time_base = Fraction(1, 30)
    context = av.CodecContext.create("libx264", "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = time_base
    context.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "crf": "30",
        "x264-params": "aq-mode=1:aq-strength=0.01",  # AQ on (ROI needs it), ~no own offsets
    }
    context.open()
    image = np.random.default_rng(3).integers(0, 255, (height, width, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, time_base
    tagged = RoiSideData(width, height, "yuv420p", time_base).attach(frame, regions)
    tagged.pts, tagged.time_base = 0, time_base
    packets = list(context.encode(tagged)) + list(context.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    decoder.options = {"export_side_data": "venc_params"}
    decoded = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
    (params,) = [sd for sd in decoded[0].side_data if sd.type.name == "VIDEO_ENC_PARAMS"]
    qp = np.asarray(params.qp_map(), dtype=int)
    values, counts = np.unique(qp, return_counts=True)
    return qp - values[np.argmax(counts)]  # the frame's QP is the most common one


@pytest.mark.parametrize(("width", "height", "regions"), CASES)
def test_h264_map_is_the_blocks_x264_boosts(width: int, height: int, regions: list[Region]) -> None:
    regions = effective_regions(regions, width, height)
    columns, rows = blocks.grid(width, height, blocks.MACROBLOCK)
    nvenc = np.array(blocks.signed(blocks.delta_qp_map(regions, width, height, 16)))
    nvenc = nvenc.reshape(rows, columns)
    x264 = x264_offsets(width, height, regions)
    assert x264.shape == nvenc.shape
    assert np.array_equal(nvenc, x264), f"NVENC map\n{nvenc}\nx264\n{x264}"


@pytest.mark.parametrize(("width", "height", "regions"), CASES)
def test_hevc_ctbs_hold_the_macroblocks_x264_boosts(
    width: int, height: int, regions: list[Region]
) -> None:
    regions = effective_regions(regions, width, height)
    columns, rows = blocks.grid(width, height, blocks.HEVC_CTB)
    nvenc = np.array(blocks.signed(blocks.delta_qp_map(regions, width, height, 32)))
    boosted_ctbs = {divmod(i, columns) for i, v in enumerate(nvenc) if v}
    x264 = x264_offsets(width, height, regions)
    x264_ctbs = {(r // 2, c // 2) for r, c in zip(*np.nonzero(x264), strict=True)}
    assert boosted_ctbs == x264_ctbs
    assert len(nvenc) == rows * columns


def test_qp_is_clamped_and_first_region_wins() -> None:
    regions = [Region(0, 0, 16, 16, -60), Region(0, 0, 32, 32, 60), Region(0, 0, 48, 16, 0)]
    cells = blocks.signed(blocks.delta_qp_map(regions, 48, 48, 16))
    assert cells == [-51, 51, 0, 51, 51, 0, 0, 0, 0]
