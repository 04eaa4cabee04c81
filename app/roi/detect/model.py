"""A recognition model: the detectors of one manifest, its derived boxes and ranking policy.

A manifest (``models/<name>/manifest.toml``, or one in the operator's folder; see
``app.roi.registry``) names one or more ``[[detector]]`` tables, ``[[derive]]`` rules that
place boxes relative to another label's (the upper body under a face), and ``[label.<name>]``
policies. ``load_model`` builds a fresh ``RecognitionModel`` from it: one instance per stream,
since an instance keeps per-stream state (the pass counter of detectors that run every k
passes); the ONNX sessions behind it are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.boxes import BoxDetector
from app.roi.detect.colour import ColourBlobDetector, HealthBarDetector
from app.roi.detect.face import RetinaFaceDetector
from app.roi.detect.geometry import Detection, prominence
from app.roi.detect.ranking import parse_ranking
from app.roi.detect.saliency import SaliencyDetector
from app.roi.detect.sessions import default_providers
from app.roi.detect.text import TextDetector
from app.roi.registry import ModelCatalog, ModelError, ModelManifest

# A kind's constructor: (its [[detector]] table, the manifest's folder, threads, providers).
DetectorKind = Callable[[ManifestTable, Path, int, Sequence[str]], Detector]

DETECTOR_KINDS: dict[str, DetectorKind] = {
    "retinaface": RetinaFaceDetector,
    "boxes": BoxDetector,
    "db_text": TextDetector,
    "saliency": SaliencyDetector,
    "health_bars": HealthBarDetector,
    "colour_blob": ColourBlobDetector,
}


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError("frame must be a uint8 numpy array")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {frame.shape}")


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


def _parse_derived(table: dict[str, Any], where: str) -> DerivedBox:
    opts = ManifestTable(table, where)
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
        self.detectors: list[Detector] = []
        for i, table in enumerate(tables):
            opts = ManifestTable(table, f"{where} detector[{i}]")
            kind = opts.get("kind", str)
            cls = DETECTOR_KINDS.get(kind)
            if cls is None:
                raise ModelError(f"{opts.where}: unknown kind {kind!r} ({sorted(DETECTOR_KINDS)})")
            self.detectors.append(cls(opts, base, threads, providers))
        self.derived = [
            _parse_derived(t, f"{where} derive[{i}]")
            for i, t in enumerate(manifest.table.get("derive", []))
        ]
        self.ranking = parse_ranking(manifest.table.get("label", {}), where)
        self.labels = tuple(
            dict.fromkeys(
                [label for d in self.detectors for label in d.label_names]
                + [d.label for d in self.derived]
            )
        )
        # What ONNX Runtime really gave each session (CUDA may have fallen back to CPU), in order.
        self._providers = tuple(
            dict.fromkeys(
                provider
                for d in self.detectors
                if d.session is not None
                for provider in d.session.get_providers()
            )
        )
        self._passes = 0
        self._cached: dict[int, list[list[Detection]]] = {}

    @property
    def providers(self) -> list[str]:
        """The execution providers this model's ONNX sessions use, e.g.
        ``["CPUExecutionProvider"]``; empty when none of its detectors runs a network."""
        return list(self._providers)

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
