"""What every detector kind shares: typed reads of its manifest table, and the common fields.

Each ``[[detector]]`` table of a manifest may say ``every`` (run on every k-th pass and repeat
the last result in between), ``fallback`` (run only when the other detectors found nothing)
and ``areas`` (the parts of the picture where its finds count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from app.roi.detect.geometry import Detection
from app.roi.registry import ModelError


class ManifestTable:
    """Typed reads of one manifest table, with errors naming the manifest and field."""

    def __init__(self, table: dict[str, Any], where: str) -> None:
        self.table = table
        self.where = where

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        value = self.table.get(key, default)
        if value is None:
            raise ModelError(f"{self.where}: field {key!r} is required")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelError(f"{self.where}: field {key!r} must be {kind.__name__}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.get(key, float, default)
        if not lo <= value <= hi:
            raise ModelError(f"{self.where}: field {key!r}={value} is outside [{lo}, {hi}]")
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.get(key, int, default)
        if not lo <= value <= hi:
            raise ModelError(f"{self.where}: field {key!r}={value} is outside [{lo}, {hi}]")
        return value


class Detector:
    """One detector kind's instance, built from its ``[[detector]]`` table.

    A kind sets ``label_names`` (every label it can report) and implements ``detect_batch``;
    one that runs an ONNX model sets ``session``. Its constructor takes the table, the
    manifest's folder (weights paths are relative to it), onnxruntime's thread count and
    execution providers.
    """

    label_names: tuple[str, ...] = ()
    session: ort.InferenceSession | None = None

    def __init__(self, opts: ManifestTable) -> None:
        self.every = opts.integer("every", 1, 1, 1000)
        self.fallback = opts.get("fallback", bool, False)
        # Parts of the picture (fractions x0, y0, x1, y1) where this detector's finds count,
        # e.g. the bands where a game draws its scoreboard; empty = everywhere.
        areas = opts.table.get("areas", [])
        try:
            self.areas = np.array(areas, np.float64).reshape(-1, 4)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{opts.where}: areas must be [[x0, y0, x1, y1], ...]") from exc

    def within_areas(self, found: list[Detection], width: int, height: int) -> list[Detection]:
        if not self.areas.size or not found:
            return found
        centres = np.array(
            [((d.box[0] + d.box[2]) / 2 / width, (d.box[1] + d.box[3]) / 2 / height) for d in found]
        )
        a = self.areas
        inside = np.any(
            (centres[:, None, 0] >= a[None, :, 0])
            & (centres[:, None, 0] < a[None, :, 2])
            & (centres[:, None, 1] >= a[None, :, 1])
            & (centres[:, None, 1] < a[None, :, 3]),
            axis=1,
        )
        return [d for d, keep in zip(found, inside, strict=True) if keep]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per frame (RGB uint8), boxes in that frame's pixels."""
        raise NotImplementedError
