"""Detectors of coloured shapes, without a network: a MOBA's health bars (manifest kind
``health_bars``) and round blobs of one colour such as a ball (``colour_blob``).

Both threshold HSV colour ranges on a downscaled picture and judge the connected parts by
size, aspect and fill; every step works on whole arrays, with Python loops only over the few
candidates that pass the cheap tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.geometry import Detection, to_detections
from app.roi.registry import ModelError


@dataclass(frozen=True, slots=True)
class _HsvRange:
    low: tuple[int, int, int]
    high: tuple[int, int, int]


def _hsv_ranges(value: Any, where: str) -> list[_HsvRange]:
    try:
        return [_HsvRange(tuple(r[0]), tuple(r[1])) for r in value]
    except (TypeError, IndexError) as exc:
        raise ModelError(f"{where}: hsv ranges must be [[[h,s,v],[h,s,v]], ...]") from exc


def _hsv_mask(hsv: np.ndarray, ranges: Sequence[_HsvRange]) -> np.ndarray:
    mask: np.ndarray = np.zeros(hsv.shape[:2], np.uint8)
    for r in ranges:
        in_range = cv2.inRange(hsv, np.array(r.low, np.uint8), np.array(r.high, np.uint8))
        mask = cv2.bitwise_or(mask, in_range)
    return mask


@dataclass(frozen=True, slots=True)
class _ColourBlobs:
    """Connected regions of a colour mask on a downscaled picture (stats in its pixels)."""

    scale: float  # downscaled / original
    small: np.ndarray
    hsv: np.ndarray
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    area: np.ndarray


def _colour_blobs(
    frame: np.ndarray,
    work_width: int,
    colours: Sequence[_HsvRange],
    close_kernel: tuple[int, int],
    connectivity: int,
) -> _ColourBlobs | None:
    """The picture at ``work_width`` at most, masked by ``colours``, closed, and split into
    connected components; None when nothing has the colours."""
    h, w = frame.shape[:2]
    scale = min(1.0, work_width / w)
    small = (
        frame
        if scale == 1.0
        else cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    mask = cv2.morphologyEx(
        _hsv_mask(hsv, colours), cv2.MORPH_CLOSE, np.ones(close_kernel, np.uint8)
    )
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=connectivity)
    if count <= 1:
        return None
    return _ColourBlobs(
        scale,
        small,
        hsv,
        stats[1:, cv2.CC_STAT_LEFT],
        stats[1:, cv2.CC_STAT_TOP],
        stats[1:, cv2.CC_STAT_WIDTH],
        stats[1:, cv2.CC_STAT_HEIGHT],
        stats[1:, cv2.CC_STAT_AREA],
    )


MAX_BAR_CANDIDATES = 200


class HealthBarDetector(Detector):
    """Heroes in a MOBA picture, found by the health bar drawn over each hero.

    A hero's bar is a thin horizontal strip of saturated team colour (green, blue or red)
    inside a dark frame, with the hero standing below it. The detector thresholds the team
    colours in HSV, keeps strips whose size and aspect match a hero bar (minions' bars are
    thinner and shorter; towers' longer), checks for the dark frame around the strip, and
    reports a box from the bar down over the hero's body. It was designed and tuned on frames
    rendered by tests/data/scenes.py, not on captures of the game (see models/README.md).
    """

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.label = opts.get("label", str, "hero")
        self.label_names = (self.label,)
        self.work_width = opts.integer("work_width", 640, 160, 4096)
        self.colours = _hsv_ranges(opts.get("bar_hsv", list), opts.where)
        self.min_width = opts.number("min_bar_width", 0.035, 0.0, 1.0)  # of frame width
        self.max_width = opts.number("max_bar_width", 0.14, 0.0, 1.0)
        self.min_aspect = opts.number("min_aspect", 4.0, 1.0, 100.0)
        self.max_aspect = opts.number("max_aspect", 20.0, 1.0, 100.0)
        self.body_height = opts.number("body_height", 1.5, 0.1, 10.0)  # in bar widths
        self.max_frame_value = opts.integer("frame_max_value", 90, 0, 255)
        self.max_empty_value = opts.integer("empty_max_value", 70, 0, 255)
        self.max_empty_chroma = opts.integer("empty_max_chroma", 30, 0, 255)
        self.min_height = opts.number("min_bar_height", 0.007, 0.0, 1.0)  # of frame height

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect(f) for f in frames]

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        # The segment ticks inside a bar split it; a horizontal close joins it again.
        blobs = _colour_blobs(frame, self.work_width, self.colours, (1, 3), connectivity=4)
        if blobs is None:
            return []
        scale, small, hsv = blobs.scale, blobs.small, blobs.hsv
        sw = small.shape[1]
        x, y, bw, bh = blobs.x, blobs.y, blobs.w, blobs.h
        fill = blobs.area / np.maximum(bw * bh, 1)
        aspect = bw / np.maximum(bh, 1)
        # Cheap shape tests first, so the frame checks below see only a few candidates.
        # The coloured part alone is at least 1.5 times as wide as high (a bar down to about
        # 15 % health); round marks such as minimap dots are not.
        cand = np.nonzero(
            (fill > 0.6)
            & (bh >= max(2.0, self.min_height * small.shape[0]))
            & (aspect >= 1.5)
            & (aspect <= self.max_aspect)
            & (bw <= self.max_width * sw)
        )[0]
        # A busy picture (grass, confetti) can pass the cheap tests many times over: the
        # frame checks look at the widest candidates only, which bounds their cost.
        cand = cand[np.argsort(-bw[cand], kind="stable")[:MAX_BAR_CANDIDATES]]
        # A damaged bar shows less colour: its full width includes the dark (lost-health)
        # strip to the right of the colour, so size and aspect are checked on that.
        full_w = bw[cand] + self._dark_extension(hsv, x[cand], y[cand], bw[cand], bh[cand])
        shape_ok = (
            (full_w >= self.min_width * sw)
            & (full_w <= self.max_width * sw)
            & (full_w / np.maximum(bh[cand], 1) >= self.min_aspect)
        )
        framed = self._has_dark_frame(hsv[..., 2], x[cand], y[cand], bw[cand], bh[cand])
        good = cand[shape_ok & framed]
        full_w_of = dict(zip(cand.tolist(), full_w.tolist(), strict=True))
        found = []
        for i in good:
            fw = float(full_w_of[int(i)])
            # Level badge left of the bar, name plate above it, the hero's body below it.
            x0 = x[i] - 0.15 * fw
            x1 = x[i] + 1.02 * fw
            y0 = y[i] - 1.6 * bh[i]
            y1 = y[i] + bh[i] + self.body_height * fw
            score = float(min(1.0, 0.5 + 0.5 * fill[i]))
            found.append(
                Detection(
                    (
                        float(max(0.0, x0 / scale)),
                        float(max(0.0, y0 / scale)),
                        float(min(w, x1 / scale)),
                        float(min(h, y1 / scale)),
                    ),
                    self.label,
                    score,
                )
            )
        return found

    def _dark_extension(
        self, hsv: np.ndarray, x: np.ndarray, y: np.ndarray, bw: np.ndarray, bh: np.ndarray
    ) -> np.ndarray:
        """How far the grey-black lost-health part continues right of each coloured strip.

        Dark *and* grey (low chroma, max - min of R, G, B): dark green brush next to a bar is
        not its empty part. Chroma rather than HSV saturation, which JPEG noise makes
        meaningless on near-black pixels.
        """
        ext = np.zeros(x.size, np.int64)
        width = hsv.shape[1]
        for i in range(x.size):  # per candidate bar (a handful), each run a vectorised slice
            start = x[i] + bw[i]
            if start >= width:
                continue
            row = hsv[y[i] + bh[i] // 2, start : start + 4 * bw[i]]
            chroma = row[:, 1].astype(np.int32) * row[:, 2] // 255
            run = (row[:, 2] <= self.max_empty_value) & (chroma <= self.max_empty_chroma)
            ext[i] = run.size if run.all() else int(np.argmin(run))
        return ext

    def _has_dark_frame(
        self, value: np.ndarray, x: np.ndarray, y: np.ndarray, bw: np.ndarray, bh: np.ndarray
    ) -> np.ndarray:
        """True where the frame rows just above and below a strip are mostly dark.

        Two rows are looked at on each side, darker one per column: after downscaling, the
        frame's first row is often a blend with the bar colour.
        """
        h, w = value.shape
        ok = np.zeros(x.size, bool)
        for i in range(x.size):  # per candidate bar, each check a vectorised slice
            x0, x1 = x[i], min(w, x[i] + bw[i])
            above, below = y[i] - 2, y[i] + bh[i] + 1
            if above < 0 or below >= h:
                continue
            rows_above = value[above : above + 2, x0:x1].min(axis=0)
            rows_below = value[below - 1 : below + 1, x0:x1].min(axis=0)
            dark_above = np.mean(rows_above <= self.max_frame_value)
            dark_below = np.mean(rows_below <= self.max_frame_value)
            ok[i] = dark_above > 0.6 and dark_below > 0.6
        return ok


class ColourBlobDetector(Detector):
    """Round blobs of one colour range, e.g. the orange ball of a basketball game."""

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.label = opts.get("label", str)
        self.label_names = (self.label,)
        self.colours = _hsv_ranges(opts.get("hsv", list), opts.where)
        self.work_width = opts.integer("work_width", 640, 160, 4096)
        self.min_size = opts.number("min_size", 0.01, 0.0, 1.0)  # of frame width
        self.max_size = opts.number("max_size", 0.08, 0.0, 1.0)
        self.min_fill = opts.number("min_fill", 0.6, 0.0, 1.0)
        self.max_boxes = opts.integer("max_boxes", 1, 1, 64)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect(f) for f in frames]

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        blobs = _colour_blobs(frame, self.work_width, self.colours, (3, 3), connectivity=8)
        if blobs is None:
            return []
        scale, sw = blobs.scale, blobs.small.shape[1]
        x, y, bw, bh, area = blobs.x, blobs.y, blobs.w, blobs.h, blobs.area
        side = np.maximum(bw, bh)
        # A disc fills pi/4 of its bounding square.
        fill = area / np.maximum(side * side * (np.pi / 4), 1)
        roundish = np.minimum(bw, bh) / np.maximum(side, 1) > 0.75
        good = (
            (side >= self.min_size * sw)
            & (side <= self.max_size * sw)
            & (fill >= self.min_fill)
            & roundish
        )
        idx = np.nonzero(good)[0]
        idx = idx[np.argsort(-area[idx])][: self.max_boxes]
        boxes = np.stack([x[idx], y[idx], x[idx] + bw[idx], y[idx] + bh[idx]], 1) / scale
        scores = np.clip(fill[idx], 0, 1)
        return to_detections(boxes.astype(np.float32), scores, [self.label] * idx.size)
