"""Recognition models on ONNX Runtime: the model registry and the detector runtime.

A *recognition model* (General, LiveShows, NBA2K, HonorOfKings, or an operator's own) is a
manifest (``models/<name>/manifest.toml``) naming one or more *detectors* and the ranking
policy of their labels. ``load_model(name)`` reads the manifest and returns a
``RecognitionModel`` whose ``detect(frame_rgb)`` runs every detector on one RGB frame and
returns ``Detection`` boxes in frame pixels. Turning detections into encoder regions (padding,
merging, ranking, tracking) is ``app.roi.track``'s job; the policy it needs comes from the same
manifest (``RecognitionModel.ranking``).

Every pre/post-processing step is NumPy/OpenCV on whole arrays; no per-pixel Python loops.
ONNX sessions are shared between ``RecognitionModel`` instances (one instance per stream: an
instance keeps per-stream state such as the pass counter of detectors that run every k passes).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import onnxruntime as ort

from app.roi.registry import ModelCatalog, ModelError, ModelManifest

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    """How one label competes for the 6 region slots and the 1/5-area budget.

    ``priority``: lower goes first. ``qp_weight`` scales the template's DeltaQp.
    ``pad``: fraction of the box size added on every side. ``merge_gap``: boxes of this label
    closer than this fraction of the smaller box's size are merged into one region
    (0 = never merge). ``shrink``: a region that would overflow the area budget is shrunk
    around its centre instead of being dropped. ``max_count``: keep only the most prominent
    boxes of this label (0 = all), e.g. the host's face among guests. ``drop_nested``: a box
    lying mostly (80 %) inside a larger box of the same label is dropped (a detector's second
    box on part of a person).
    """

    priority: int = 10
    qp_weight: float = 1.0
    pad: float = 0.1
    merge_gap: float = 0.0
    shrink: bool = True
    max_count: int = 0
    drop_nested: bool = False


@dataclass(frozen=True, slots=True)
class RankingPolicy:
    labels: dict[str, LabelPolicy] = field(default_factory=dict)
    default: LabelPolicy = field(default_factory=LabelPolicy)

    def for_label(self, label: str) -> LabelPolicy:
        return self.labels.get(label, self.default)


# --------------------------------------------------------------------------- ONNX sessions

_SESSIONS: dict[tuple[str, str | None, int, tuple[str, ...]], ort.InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*providers, "CPUExecutionProvider"]


def _session(
    weights: WeightsSource, threads: int, providers: Sequence[str]
) -> ort.InferenceSession:
    # The expected digest is part of the key, so a manifest naming another digest is checked.
    key = (weights.key, weights.sha256, threads, tuple(providers))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Without this the idle worker threads spin and steal the encoder's core.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                session = ort.InferenceSession(
                    weights.load(), sess_options=options, providers=list(providers)
                )
            except Exception as exc:  # onnxruntime raises several unrelated types
                raise ModelError(f"{weights.key}: onnxruntime cannot load it: {exc}") from exc
            _SESSIONS[key] = session
        return session


@dataclass(frozen=True, slots=True)
class WeightsSource:
    """Where a detector's ONNX bytes come from: a file, or a bytes attribute of a package."""

    key: str
    path: Path | None = None
    package_attr: tuple[str, str] | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, spec: str, base: Path, sha256: str | None, where: str) -> WeightsSource:
        if spec.startswith("package:"):
            parts = spec.split(":")
            if len(parts) != 3 or not all(parts[1:]):
                raise ModelError(f"{where}: weights {spec!r} is not package:module:attribute")
            return cls(key=spec, package_attr=(parts[1], parts[2]), sha256=sha256)
        path = (base / spec).resolve()
        if not path.is_file():
            raise ModelError(f"{where}: weights file {path} does not exist")
        return cls(key=str(path), path=path, sha256=sha256)

    def load(self) -> bytes:
        if self.path is not None:
            data = self.path.read_bytes()
        else:
            assert self.package_attr is not None
            module_name, attr = self.package_attr
            try:
                data = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ModelError(f"{self.key}: {exc}") from exc
            if not isinstance(data, bytes):
                raise ModelError(f"{self.key}: is {type(data).__name__}, not bytes")
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise ModelError(f"{self.key}: sha256 differs from the manifest's")
        return data


# --------------------------------------------------------------------------- shared helpers


def _manifest_session(
    opts: _Options, base: Path, threads: int, providers: Sequence[str]
) -> ort.InferenceSession:
    """The (shared) ONNX Runtime session of a detector's ``weights`` and ``sha256`` fields."""
    weights = WeightsSource.parse(
        opts.get("weights", str), base, opts.table.get("sha256"), opts.where
    )
    return _session(weights, threads, providers)


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


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError("frame must be a uint8 numpy array")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {frame.shape}")


def _to_detections(boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> list[Detection]:
    return [
        Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), label, float(s))
        for b, s, label in zip(boxes, scores, labels, strict=True)
    ]


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


# --------------------------------------------------------------------------- detectors


class Detector(Protocol):
    label_names: tuple[str, ...]
    every: int
    fallback: bool

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]: ...


class _Options:
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


class _DetectorBase:
    def __init__(self, opts: _Options) -> None:
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
        inside = (
            (centres[:, None, 0] >= a[None, :, 0])
            & (centres[:, None, 0] < a[None, :, 2])
            & (centres[:, None, 1] >= a[None, :, 1])
            & (centres[:, None, 1] < a[None, :, 3])
        ).any(axis=1)
        return [d for d, keep in zip(found, inside, strict=True) if keep]


class RetinaFaceDetector(_DetectorBase):
    """RetinaFace (MobileNet-0.25): BGR input minus the training mean, SSD-style priors."""

    STEPS = (8, 16, 32)
    MIN_SIZES = ((16, 32), (64, 128), (256, 512))
    VARIANCE = (0.1, 0.2)
    MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32).reshape(3, 1, 1)

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
        super().__init__(opts)
        self.session = _manifest_session(opts, base, threads, providers)
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
            boxes = _clip_boxes(boxes, w, h)
            kept = nms(boxes, scores[keep], self.nms_iou)
            boxes, kept_scores = boxes[kept], scores[keep][kept]
            big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_size
            results.append(
                _to_detections(boxes[big], kept_scores[big], [self.label] * int(big.sum()))
            )
        return results


class BoxDetector(_DetectorBase):
    """The generic box-detector contract (YOLOv3-tiny and operators' own ONNX models).

    Input ``[B,3,H,W]`` float32 RGB scaled to 0..1 (fixed H, W from the model), letterboxed
    into the top-left with grey padding. Outputs ``boxes [B,N,4]`` (x0,y0,x1,y1 normalised
    to the input) and ``scores [B,N,C]``. ``labels`` maps class names to our labels; other
    classes are ignored.
    """

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
        super().__init__(opts)
        self.session = _manifest_session(opts, base, threads, providers)
        names_file = (base / opts.get("class_names", str)).resolve()
        if not names_file.is_file():
            raise ModelError(f"{opts.where}: class_names file {names_file} does not exist")
        class_names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()]
        mapping = opts.get("labels", dict)
        thresholds = opts.table.get("score_thresholds", {})
        default_threshold = opts.number("score_threshold", 0.3, 0.0, 1.0)
        self.class_ids = []
        self.class_labels = []
        self.class_thresholds = []
        for name, label in mapping.items():
            if name not in class_names:
                raise ModelError(f"{opts.where}: labels names unknown class {name!r}")
            self.class_ids.append(class_names.index(name))
            self.class_labels.append(str(label))
            self.class_thresholds.append(float(thresholds.get(name, default_threshold)))
        self.class_ids_arr = np.array(self.class_ids, np.int64)
        self.thresholds_arr = np.array(self.class_thresholds, np.float32)
        self.label_names = tuple(dict.fromkeys(self.class_labels))
        self.nms_iou = opts.number("nms_iou", 0.45, 0.0, 1.0)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        in_h, in_w = inp.shape[2], inp.shape[3]
        if not isinstance(in_h, int) or not isinstance(in_w, int):
            raise ModelError(f"{opts.where}: the model's input must have a fixed height/width")
        self.input_w, self.input_h = in_w, in_h
        outputs = {o.name for o in self.session.get_outputs()}
        if not {"boxes", "scores"} <= outputs:
            raise ModelError(f"{opts.where}: the model must output 'boxes' and 'scores'")

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        blob = np.full((len(frames), 3, self.input_h, self.input_w), 0.5, np.float32)
        boxes_for = []
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            box = Letterbox.fit(w, h, self.input_w, self.input_h)
            small = box.resize(frame).transpose(2, 0, 1)
            blob[i, :, : box.height, : box.width] = small * np.float32(1 / 255)
            boxes_for.append((box, w, h))
        all_boxes, all_scores = self.session.run(["boxes", "scores"], {self.input_name: blob})
        results = []
        for (box, w, h), boxes, scores in zip(boxes_for, all_boxes, all_scores, strict=True):
            wanted = scores[:, self.class_ids_arr]  # [N, K]
            cand, which = np.nonzero(wanted > self.thresholds_arr)
            if cand.size == 0:
                results.append([])
                continue
            px = boxes[cand] * np.array(
                [self.input_w, self.input_h, self.input_w, self.input_h], np.float32
            )
            px = _clip_boxes(px / box.scale, w, h)
            cand_scores = wanted[cand, which]
            found: list[Detection] = []
            # NMS per label: offsetting boxes by label keeps labels from suppressing each other.
            offset = which[:, None].astype(np.float32) * (w + h + 1)
            kept = nms(px + offset, cand_scores, self.nms_iou)
            labels = [self.class_labels[k] for k in which[kept]]
            found = _to_detections(px[kept], cand_scores[kept], labels)
            results.append(found)
        return results


class TextDetector(_DetectorBase):
    """PP-OCR text detection (DB): probability map -> connected components -> boxes."""

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
        super().__init__(opts)
        self.session = _manifest_session(opts, base, threads, providers)
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
        boxes = _clip_boxes(boxes.astype(np.float32), w, h)
        good = (mean_prob > self.box_threshold) & (boxes[:, 3] - boxes[:, 1] >= self.min_height)
        return _to_detections(boxes[good], mean_prob[good], [self.label] * int(good.sum()))


class SaliencyDetector(_DetectorBase):
    """Salient object by colour contrast (frequency-tuned saliency, Achanta et al. 2009).

    On an 80-pixel-wide thumbnail: each pixel's distance in Lab from the picture's mean
    colour, weighted towards the centre (where the subject of a shot usually is). The
    connected part above twice the mean with the most saliency mass is the object. Spectral
    residual saliency was tried first and dropped: its FFT wraps around the picture edges and
    made full-height streaks out of a single object.
    """

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
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


@dataclass(frozen=True, slots=True)
class _HsvRange:
    low: tuple[int, int, int]
    high: tuple[int, int, int]


def _hsv_ranges(value: Any, where: str) -> list[_HsvRange]:
    try:
        return [_HsvRange(tuple(r[0]), tuple(r[1])) for r in value]  # type: ignore[arg-type]
    except (TypeError, IndexError) as exc:
        raise ModelError(f"{where}: hsv ranges must be [[[h,s,v],[h,s,v]], ...]") from exc


def _hsv_mask(hsv: np.ndarray, ranges: Sequence[_HsvRange]) -> np.ndarray:
    mask = np.zeros(hsv.shape[:2], np.uint8)
    for r in ranges:
        mask |= cv2.inRange(hsv, np.array(r.low, np.uint8), np.array(r.high, np.uint8))
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


class HealthBarDetector(_DetectorBase):
    """Heroes in a MOBA picture, found by the health bar drawn over each hero.

    A hero's bar is a thin horizontal strip of saturated team colour (green, blue or red)
    inside a dark frame, with the hero standing below it. The detector thresholds the team
    colours in HSV, keeps strips whose size and aspect match a hero bar (minions' bars are
    thinner and shorter; towers' longer), checks for the dark frame around the strip, and
    reports a box from the bar down over the hero's body. It was designed and tuned on frames
    rendered by tests/data/scenes.py, not on captures of the game (see models/README.md).
    """

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
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


class ColourBlobDetector(_DetectorBase):
    """Round blobs of one colour range, e.g. the orange ball of a basketball game."""

    def __init__(self, opts: _Options, base: Path, threads: int, providers: Sequence[str]) -> None:
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
        return _to_detections(boxes.astype(np.float32), scores, [self.label] * idx.size)


DETECTOR_KINDS: dict[str, type[_DetectorBase]] = {
    "retinaface": RetinaFaceDetector,
    "boxes": BoxDetector,
    "db_text": TextDetector,
    "saliency": SaliencyDetector,
    "health_bars": HealthBarDetector,
    "colour_blob": ColourBlobDetector,
}


# --------------------------------------------------------------------------- derived regions


@dataclass(frozen=True, slots=True)
class DerivedBox:
    """A region placed relative to another detection, e.g. the upper body under a face.

    Offsets are in units of the source box's width/height: the new box spans
    ``[cx + left*w, top + top_off*h, cx + right*w, top + bottom*h]``.
    """

    source: str
    label: str
    left: float
    right: float
    top: float
    bottom: float
    score_factor: float
    max_count: int

    def apply(self, detections: list[Detection], width: int, height: int) -> list[Detection]:
        sources = [d for d in detections if d.label == self.source]
        sources.sort(key=lambda d: prominence(d, width, height), reverse=True)
        derived = []
        for d in sources[: self.max_count]:
            x0, y0, x1, _y1 = d.box
            cx, bw, bh = (x0 + x1) / 2, d.width, d.height
            box = (
                max(0.0, cx + self.left * bw),
                max(0.0, y0 + self.top * bh),
                min(float(width), cx + self.right * bw),
                min(float(height), y0 + self.bottom * bh),
            )
            if box[2] > box[0] and box[3] > box[1]:
                derived.append(Detection(box, self.label, d.score * self.score_factor))
        return derived


def prominence(d: Detection, width: int, height: int) -> float:
    """How much a detection draws the eye: size, nearness to the centre, confidence.

    Used to pick the host's main face and to order boxes of the same label.
    """
    cx = (d.box[0] + d.box[2]) / 2 / width - 0.5
    cy = (d.box[1] + d.box[3]) / 2 / height - 0.5
    off_centre = math.hypot(cx, cy) / math.hypot(0.5, 0.5)  # 0 at the centre, 1 in a corner
    size = math.sqrt(d.width * d.height / (width * height))
    return size * (1.0 - 0.5 * off_centre) * (0.5 + 0.5 * d.score)


# --------------------------------------------------------------------------- models


class RecognitionModel:
    """One training model: its detectors and ranking policy. One instance per stream."""

    def __init__(self, manifest: ModelManifest, threads: int, providers: Sequence[str]) -> None:
        self.name = manifest.name
        self.description = manifest.description
        self.manifest_path = manifest.path
        base = manifest.path.parent
        where = str(manifest.path)
        tables = manifest.table.get("detector")
        if not isinstance(tables, list) or not tables:
            raise ModelError(f"{where}: needs at least one [[detector]] table")
        self.detectors: list[_DetectorBase] = []
        for i, table in enumerate(tables):
            opts = _Options(table, f"{where} detector[{i}]")
            kind = opts.get("kind", str)
            cls = DETECTOR_KINDS.get(kind)
            if cls is None:
                raise ModelError(f"{opts.where}: unknown kind {kind!r} ({sorted(DETECTOR_KINDS)})")
            self.detectors.append(cls(opts, base, threads, providers))  # type: ignore[call-arg]
        self.derived = [
            _parse_derived(t, f"{where} derive[{i}]")
            for i, t in enumerate(manifest.table.get("derive", []))
        ]
        self.ranking = _parse_ranking(manifest.table.get("label", {}), where)
        self.labels = tuple(
            dict.fromkeys(
                [label for d in self.detectors for label in d.label_names]
                + [d.label for d in self.derived]
            )
        )
        self._passes = 0
        self._cached: dict[int, list[list[Detection]]] = {}

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([frame_rgb])[0]

    def reset(self) -> None:
        """Forget per-stream state: the next call runs every detector (after a cut or seek)."""
        self._passes = 0
        self._cached.clear()

    def detect_batch(self, frames_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detect on several frames at once (one session run per detector where it batches).

        Detectors with ``every = k`` run on every k-th call and repeat their last result in
        between (their targets, such as text, move little).
        """
        for frame in frames_rgb:
            check_frame(frame)
        n = len(frames_rgb)
        results: list[list[Detection]] = [[] for _ in range(n)]
        for index, detector in enumerate(self.detectors):
            if detector.fallback:
                continue
            cached = self._cached.get(index)
            if self._passes % detector.every == 0 or cached is None or len(cached) != n:
                cached = [
                    detector.within_areas(found, f.shape[1], f.shape[0])
                    for f, found in zip(frames_rgb, detector.detect_batch(frames_rgb), strict=True)
                ]
                self._cached[index] = cached
            for out, found in zip(results, cached, strict=True):
                out.extend(found)
        fallbacks = [d for d in self.detectors if d.fallback]
        for i, frame in enumerate(frames_rgb):
            if not results[i]:
                for detector in fallbacks:
                    found = detector.detect_batch([frame])[0]
                    results[i].extend(detector.within_areas(found, frame.shape[1], frame.shape[0]))
                    if results[i]:
                        break
            h, w = frame.shape[:2]
            for rule in self.derived:
                results[i].extend(rule.apply(results[i], w, h))
        self._passes += 1
        return results


def _parse_derived(table: dict[str, Any], where: str) -> DerivedBox:
    opts = _Options(table, where)
    return DerivedBox(
        source=opts.get("from", str),
        label=opts.get("label", str),
        left=opts.number("left", -1.5, -100, 100),
        right=opts.number("right", 1.5, -100, 100),
        top=opts.number("top", -0.2, -100, 100),
        bottom=opts.number("bottom", 3.5, -100, 100),
        score_factor=opts.number("score_factor", 0.9, 0.0, 1.0),
        max_count=opts.integer("max_count", 1, 1, 64),
    )


def _parse_ranking(table: Any, where: str) -> RankingPolicy:
    if not isinstance(table, dict):
        raise ModelError(f"{where}: [label] must be a table of label policies")
    labels = {}
    for label, sub in table.items():
        opts = _Options(sub, f"{where} label.{label}")
        labels[label] = LabelPolicy(
            priority=opts.integer("priority", 10, -1000, 1000),
            qp_weight=opts.number("qp_weight", 1.0, 0.0, 4.0),
            pad=opts.number("pad", 0.1, 0.0, 2.0),
            merge_gap=opts.number("merge_gap", 0.0, 0.0, 10.0),
            shrink=opts.get("shrink", bool, True),
            max_count=opts.integer("max_count", 0, 0, 64),
            drop_nested=opts.get("drop_nested", bool, False),
        )
    return RankingPolicy(labels=labels)


def load_model(
    name: str,
    *,
    threads: int = 1,
    providers: Sequence[str] | None = None,
    catalog: ModelCatalog | None = None,
) -> RecognitionModel:
    """A fresh ``RecognitionModel`` for ``name`` (case-insensitive); sessions are shared.

    ``threads`` is onnxruntime's intra-op thread count (1 leaves the other core to the
    encoder). ``providers`` defaults to CUDA when available, else CPU.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    manifest = (catalog or ModelCatalog()).manifest(name)
    return RecognitionModel(manifest, threads, providers or default_providers())
