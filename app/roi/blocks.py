"""Which coding blocks a frame's regions boost: one rule for every encoder.

FFmpeg's libx264 wrapper (libavcodec/libx264.c, the ROI part of X264_frame) turns
``AV_FRAME_DATA_REGIONS_OF_INTEREST`` into x264's per-macroblock ``quant_offsets`` like this:

* the picture has ``ceil(width / 16) x ceil(height / 16)`` blocks;
* a region covers block columns ``left // 16`` up to (exclusive) ``ceil(right / 16)`` and rows
  ``top // 16`` to ``ceil(bottom / 16)``, each capped at the block count: every block the
  rectangle touches;
* the entries are applied from the last to the first, so where regions overlap the *first*
  one wins;
* the offset is ``qoffset * 51`` (8-bit), clipped to [-51, 51]; our DeltaQp arrives as
  ``DeltaQp / 51``, so a block gets the region's DeltaQp clamped to [-51, 51].

libx265's wrapper applies the same rule on its own block grid. NVENC takes the same
information as a signed 8-bit delta-QP map, one value per 16x16 macroblock for H.264 and per
32x32 CTB for HEVC (``NV_ENC_PIC_PARAMS.qpDeltaMap``): :func:`delta_qp_map` builds it with
this rule, so a frame's regions mean the same pixels whichever encoder runs. (The ROI stage
already aligns detected regions to 16x16 blocks, app/roi/track.py ``fit_regions``; on HEVC's
32x32 grid NVENC may boost up to one 16-pixel band more than x265 at a region's edges.)
"""

from __future__ import annotations

from collections.abc import Sequence

from app.roi.regions import MAX_DELTA_QP, MIN_DELTA_QP, Region

MACROBLOCK = 16  # H.264 macroblocks, x264/x265 quant_offsets
HEVC_CTB = 32  # the CTB size the NVENC HEVC session is opened with (maxCUSize 32x32)


def grid(width: int, height: int, block: int) -> tuple[int, int]:
    """(columns, rows) of ``block``-sized blocks covering a ``width`` x ``height`` picture."""
    return -(-width // block), -(-height // block)


def region_blocks(region: Region, width: int, height: int, block: int) -> tuple[range, range]:
    """(rows, columns) of the blocks ``region`` touches, as FFmpeg's wrappers compute them."""
    columns, rows = grid(width, height, block)
    return (
        range(min(rows, region.top // block), min(rows, -(-region.bottom // block))),
        range(min(columns, region.left // block), min(columns, -(-region.right // block))),
    )


def delta_qp_map(regions: Sequence[Region], width: int, height: int, block: int) -> bytearray:
    """The per-block delta-QP map (int8 two's complement, raster order) of ``regions``.

    ``regions`` are the frame's effective regions in order; blocks no region touches are 0.
    """
    columns, rows = grid(width, height, block)
    cells = bytearray(columns * rows)
    for region in reversed(regions):  # the first region wins where regions overlap
        qp = max(MIN_DELTA_QP, min(MAX_DELTA_QP, region.qp))
        value = qp & 0xFF
        block_rows, block_columns = region_blocks(region, width, height, block)
        for row in block_rows:
            start = row * columns
            cells[start + block_columns.start : start + block_columns.stop] = bytes(
                [value] * len(block_columns)
            )
    return cells


def signed(cells: bytes | bytearray) -> list[int]:
    """A map's values as Python ints (-51..51)."""
    return [c - 256 if c > 127 else c for c in cells]
