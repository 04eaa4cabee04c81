"""The object that stands out by colour contrast, without a network (manifest kind ``saliency``).

General uses it as a fallback: when no face, person or text is found, the most salient part
of the picture still gets the better quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.geometry import Detection


class SaliencyDetector(Detector):
    """Salient object by colour contrast (frequency-tuned saliency, Achanta et al. 2009).

    On an 80-pixel-wide thumbnail: each pixel's distance in Lab from the picture's mean
    colour, weighted towards the centre (where the subject of a shot usually is). The
    connected part above twice the mean with the most saliency mass is the object. Spectral
    residual saliency was tried first and dropped: its FFT wraps around the picture edges and
    made full-height streaks out of a single object.
    """

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.label = opts.get("label", str, "salient")
        self.label_names = (self.label,)
        self.thumb = opts.integer("thumbnail_width", 80, 16, 512)
        self.max_boxes = opts.integer("max_boxes", 1, 1, 16)
        self.min_contrast = opts.number("min_contrast", 4.0, 0.0, 255.0)
        self.threshold = opts.number("threshold", 2.0, 0.5, 20.0)
        self.centre_sigma = opts.number("centre_sigma", 0.35, 0.05, 10.0)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect(f) for f in frames]

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        tw = self.thumb
        th = max(8, round(h * tw / w))
        small = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        if float(lab[..., 0].std()) < self.min_contrast and float(lab.std()) < self.min_contrast:
            return []  # a flat picture has nothing that stands out
        smooth = cv2.GaussianBlur(lab, (0, 0), 1.0)
        saliency = np.linalg.norm(smooth - lab.reshape(-1, 3).mean(axis=0), axis=2)
        ys = (np.arange(th, dtype=np.float32) / th - 0.5)[:, None]
        xs = (np.arange(tw, dtype=np.float32) / tw - 0.5)[None, :]
        saliency *= np.exp(-(xs**2 + ys**2) / (2 * self.centre_sigma**2))
        mean = float(saliency.mean())
        if mean <= 0:
            return []
        mask = (saliency > self.threshold * mean).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            return []
        mass = np.bincount(labels.ravel(), weights=saliency.ravel(), minlength=count)[1:]
        order = np.argsort(-mass)[: self.max_boxes]
        sx, sy = w / tw, h / th
        found = []
        for i in order:
            x, y, bw, bh = (int(v) for v in stats[1 + i, :4])
            box = (x * sx, y * sy, (x + bw) * sx, (y + bh) * sy)
            found.append(Detection(box, self.label, float(mass[i] / mass.sum())))
        return found
