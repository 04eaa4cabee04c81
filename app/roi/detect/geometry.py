"""Box geometry shared by the detectors and the tracker.

A box is (x0, y0, x1, y1) in frame pixels, x1/y1 exclusive; arrays of boxes are ``[n, 4]``.
Areas, intersections, IoU and non-maximum suppression work on whole arrays. ``Letterbox``
maps a frame into a network's input and back; ``prominence`` says how much a box draws the
eye.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: ``box`` is (x0, y0, x1, y1) in frame pixels, x1/y1 exclusive."""

    box: tuple[float, float, float, float]
    label: str
    score: float

    @property
    def width(self) -> float:
        return max(0.0, self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return max(0.0, self.box[3] - self.box[1])


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of boxes [n,4] (x0,y0,x1,y1) -> [n]."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of boxes a [n,4] and b [m,4] (x0,y0,x1,y1) -> [n,m]."""
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [n,4] and b [m,4] (x0,y0,x1,y1) -> [n,m]."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = 200
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first.

    The IoU matrix of the top_k candidates is computed at once; the loop runs over candidates
    (at most top_k), never over pixels.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")[:top_k]
    iou = box_iou(boxes[order], boxes[order])
    suppressed = np.zeros(order.size, bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[np.array(keep, np.int64)]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """A frame scaled by ``scale`` into the top-left of a padded network input."""

    scale: float
    width: int  # scaled content size
    height: int
    input_width: int
    input_height: int

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, input_w: int, input_h: int) -> Letterbox:
        scale = min(input_w / frame_w, input_h / frame_h)
        w = max(1, min(input_w, round(frame_w * scale)))
        h = max(1, min(input_h, round(frame_h * scale)))
        return cls(scale, w, h, input_w, input_h)

    @classmethod
    def long_side(cls, frame_w: int, frame_h: int, long_side: int, multiple: int) -> Letterbox:
        scale = min(1.0, long_side / max(frame_w, frame_h))
        w, h = max(1, round(frame_w * scale)), max(1, round(frame_h * scale))
        in_w = math.ceil(w / multiple) * multiple
        in_h = math.ceil(h / multiple) * multiple
        return cls(scale, w, h, in_w, in_h)

    def resize(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[1] == self.width and frame.shape[0] == self.height:
            return frame
        return cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_LINEAR)


def to_detections(boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> list[Detection]:
    return [
        Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), label, float(s))
        for b, s, label in zip(boxes, scores, labels, strict=True)
    ]


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def prominence(d: Detection, width: int, height: int) -> float:
    """How much a detection draws the eye: size, nearness to the centre, confidence.

    Used to pick the host's main face and to order boxes of the same label.
    """
    cx = (d.box[0] + d.box[2]) / 2 / width - 0.5
    cy = (d.box[1] + d.box[3]) / 2 / height - 0.5
    off_centre = math.hypot(cx, cy) / math.hypot(0.5, 0.5)  # 0 at the centre, 1 in a corner
    size = math.sqrt(d.width * d.height / (width * height))
    return size * (1.0 - 0.5 * off_centre) * (0.5 + 0.5 * d.score)
