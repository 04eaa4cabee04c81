"""Text: PP-OCR's DB text detector (manifest kind ``db_text``).

The network gives a per-pixel text probability; its connected parts, grown back by DB's
"unclip" ratio, are the text boxes. No recognition of the characters is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.geometry import Detection, Letterbox, clip_boxes, to_detections
from app.roi.detect.sessions import manifest_session


class TextDetector(Detector):
    """PP-OCR text detection (DB): probability map -> connected components -> boxes."""

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.session: ort.InferenceSession = manifest_session(opts, base, threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.long_side = opts.integer("input_long_side", 640, 64, 4096)
        self.pixel_threshold = opts.number("pixel_threshold", 0.3, 0.0, 1.0)
        self.box_threshold = opts.number("score_threshold", 0.6, 0.0, 1.0)
        self.unclip_ratio = opts.number("unclip_ratio", 1.6, 0.0, 10.0)
        self.min_height = opts.number("min_height", 6.0, 0.0, 10000.0)
        self.label = opts.get("label", str, "text")
        self.label_names = (self.label,)
        mean = opts.table.get("mean", [0.5, 0.5, 0.5])
        std = opts.table.get("std", [0.5, 0.5, 0.5])
        # PaddleOCR normalises the BGR image; fold 1/255, mean and std into one affine step.
        self.scale = (1 / (255 * np.array(std, np.float32))).reshape(3, 1, 1)
        self.shift = (np.array(mean, np.float32) / np.array(std, np.float32)).reshape(3, 1, 1)

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect(f) for f in frames]

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        box = Letterbox.long_side(w, h, self.long_side, 32)
        blob = np.zeros((1, 3, box.input_height, box.input_width), np.float32)
        small = box.resize(frame)[..., ::-1].transpose(2, 0, 1)
        blob[0, :, : box.height, : box.width] = small * self.scale - self.shift
        prob = self.session.run(None, {self.input_name: blob})[0][0, 0, : box.height, : box.width]
        mask = (prob > self.pixel_threshold).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count <= 1:
            return []
        sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count)
        mean_prob = sums[1:] / np.maximum(stats[1:, cv2.CC_STAT_AREA], 1)
        x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
        bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
        # DB's "unclip": grow the shrunk text kernel by area * ratio / perimeter.
        grow = (bw * bh) * self.unclip_ratio / np.maximum(2 * (bw + bh), 1)
        boxes = np.stack([x - grow, y - grow, x + bw + grow, y + bh + grow], 1) / box.scale
        boxes = clip_boxes(boxes.astype(np.float32), w, h)
        good = (mean_prob > self.box_threshold) & (boxes[:, 3] - boxes[:, 1] >= self.min_height)
        return to_detections(boxes[good], mean_prob[good], [self.label] * int(good.sum()))
