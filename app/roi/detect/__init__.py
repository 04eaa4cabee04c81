"""Recognition models on ONNX Runtime, NumPy and OpenCV: from an RGB frame to labelled boxes.

``load_model(name)`` reads a model's manifest (found through ``app.roi.registry``) and returns
a ``RecognitionModel`` whose ``detect(frame_rgb)`` runs its detectors and returns
``Detection`` boxes in frame pixels; ``RecognitionModel.ranking`` is the label policy that
``app.roi.track`` applies when it turns detections into encoder regions.

One module per concept: ``geometry`` (boxes, IoU, NMS, letterboxing, prominence),
``sessions`` (ONNX Runtime sessions and weights), ``base`` (what every detector kind shares),
one module per detector kind (``face``, ``boxes``, ``text``, ``saliency``, ``colour``),
``ranking`` (label policies) and ``model`` (the manifest's detectors, derived boxes and
``load_model``). Pre- and post-processing work on whole arrays, never pixel by pixel.
"""

from app.roi.detect.boxes import BoxDetector
from app.roi.detect.colour import ColourBlobDetector, HealthBarDetector
from app.roi.detect.face import RetinaFaceDetector
from app.roi.detect.geometry import (
    Detection,
    box_area,
    box_intersection,
    box_iou,
    nms,
    prominence,
)
from app.roi.detect.model import RecognitionModel, load_model
from app.roi.detect.ranking import LabelPolicy, RankingPolicy
from app.roi.detect.saliency import SaliencyDetector
from app.roi.detect.sessions import default_providers
from app.roi.detect.text import TextDetector

__all__ = [
    "BoxDetector",
    "ColourBlobDetector",
    "Detection",
    "HealthBarDetector",
    "LabelPolicy",
    "RankingPolicy",
    "RecognitionModel",
    "RetinaFaceDetector",
    "SaliencyDetector",
    "TextDetector",
    "box_area",
    "box_intersection",
    "box_iou",
    "default_providers",
    "load_model",
    "nms",
    "prominence",
]
