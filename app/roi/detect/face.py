"""Faces: RetinaFace (MobileNet-0.25) on a letterboxed frame (manifest kind ``retinaface``).

The input is the frame scaled so its long side is ``input_long_side``, in BGR minus the
training mean; the outputs are offsets against SSD-style prior boxes, decoded, thresholded
and de-duplicated by NMS here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.geometry import Detection, Letterbox, clip_boxes, nms, to_detections
from app.roi.detect.sessions import manifest_session
from app.roi.registry import ModelError


class RetinaFaceDetector(Detector):
    """RetinaFace (MobileNet-0.25): BGR input minus the training mean, SSD-style priors."""

    STEPS = (8, 16, 32)
    MIN_SIZES = ((16, 32), (64, 128), (256, 512))
    VARIANCE = (0.1, 0.2)
    MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32).reshape(3, 1, 1)

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.session: ort.InferenceSession = manifest_session(opts, base, threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.long_side = opts.integer("input_long_side", 640, 64, 4096)
        self.score_threshold = opts.number("score_threshold", 0.7, 0.0, 1.0)
        self.nms_iou = opts.number("nms_iou", 0.4, 0.0, 1.0)
        self.min_size = opts.number("min_size", 0.0, 0.0, 10000.0)
        self.label = opts.get("label", str, "face")
        self.label_names = (self.label,)
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def priors(self, in_w: int, in_h: int) -> np.ndarray:
        """[n,4] prior boxes (cx, cy, w, h) in input pixels, in the network's output order."""
        cached = self._priors.get((in_w, in_h))
        if cached is not None:
            return cached
        parts = []
        for step, sizes in zip(self.STEPS, self.MIN_SIZES, strict=True):
            ny, nx = math.ceil(in_h / step), math.ceil(in_w / step)
            ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            centres = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * step
            for_sizes = np.repeat(centres, len(sizes), axis=0)
            wh = np.tile(np.array([[s, s] for s in sizes], np.float32), (nx * ny, 1))
            parts.append(np.hstack([for_sizes, wh]))
        priors = np.concatenate(parts).astype(np.float32)
        self._priors[(in_w, in_h)] = priors
        return priors

    def _blob(self, frame: np.ndarray, box: Letterbox) -> np.ndarray:
        blob = np.zeros((3, box.input_height, box.input_width), np.float32)
        small = box.resize(frame)
        blob[:, : box.height, : box.width] = small[..., ::-1].transpose(2, 0, 1)
        blob[:, : box.height, : box.width] -= self.MEAN_BGR
        return blob

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        box = Letterbox.long_side(w, h, self.long_side, 32)
        if any(f.shape[:2] != (h, w) for f in frames):
            return [d for f in frames for d in self.detect_batch([f])]
        blob = np.stack([self._blob(f, box) for f in frames])
        loc, conf, _landmarks = self.session.run(None, {self.input_name: blob})
        priors = self.priors(box.input_width, box.input_height)
        if loc.shape[1] != priors.shape[0]:
            raise ModelError(f"retinaface: {loc.shape[1]} outputs, expected {priors.shape[0]}")
        results = []
        for frame_loc, frame_conf in zip(loc, conf, strict=True):
            scores = frame_conf[:, 1]
            keep = np.nonzero(scores > self.score_threshold)[0]
            cand = frame_loc[keep]
            pri = priors[keep]
            centre = pri[:, :2] + cand[:, :2] * self.VARIANCE[0] * pri[:, 2:]
            size = pri[:, 2:] * np.exp(cand[:, 2:] * self.VARIANCE[1])
            boxes = np.hstack([centre - size / 2, centre + size / 2]) / box.scale
            boxes = clip_boxes(boxes, w, h)
            kept = nms(boxes, scores[keep], self.nms_iou)
            boxes, kept_scores = boxes[kept], scores[keep][kept]
            big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_size
            results.append(
                to_detections(boxes[big], kept_scores[big], [self.label] * int(big.sum()))
            )
        return results
