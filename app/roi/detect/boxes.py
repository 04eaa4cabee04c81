"""Objects of named classes from a generic ONNX box detector (manifest kind ``boxes``).

YOLOv3-tiny (COCO) ships with the project; an operator's own model fits if it keeps the
contract in ``BoxDetector``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.roi.detect.base import Detector, ManifestTable
from app.roi.detect.geometry import Detection, Letterbox, clip_boxes, nms, to_detections
from app.roi.detect.sessions import manifest_session
from app.roi.registry import ModelError


class BoxDetector(Detector):
    """The generic box-detector contract (YOLOv3-tiny and operators' own ONNX models).

    Input ``[B,3,H,W]`` float32 RGB scaled to 0..1 (fixed H, W from the model), letterboxed
    into the top-left with grey padding. Outputs ``boxes [B,N,4]`` (x0,y0,x1,y1 normalised
    to the input) and ``scores [B,N,C]``. ``labels`` maps class names to our labels; other
    classes are ignored.
    """

    def __init__(
        self, opts: ManifestTable, base: Path, threads: int, providers: Sequence[str]
    ) -> None:
        super().__init__(opts)
        self.session: ort.InferenceSession = manifest_session(opts, base, threads, providers)
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
        results: list[list[Detection]] = []
        for (box, w, h), boxes, scores in zip(boxes_for, all_boxes, all_scores, strict=True):
            wanted = scores[:, self.class_ids_arr]  # [N, K]
            cand, which = np.nonzero(wanted > self.thresholds_arr)
            if cand.size == 0:
                results.append([])
                continue
            px = boxes[cand] * np.array(
                [self.input_w, self.input_h, self.input_w, self.input_h], np.float32
            )
            px = clip_boxes(px / box.scale, w, h)
            cand_scores = wanted[cand, which]
            found: list[Detection] = []
            # NMS per label: offsetting boxes by label keeps labels from suppressing each other.
            offset = which[:, None].astype(np.float32) * (w + h + 1)
            kept = nms(px + offset, cand_scores, self.nms_iou)
            labels = [self.class_labels[k] for k in which[kept]]
            found = to_detections(px[kept], cand_scores[kept], labels)
            results.append(found)
        return results
