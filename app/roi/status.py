"""What the ROI stage reports about a stream, and the push-URL query that names its template.

The worker thread measures (:class:`RoiStats`) and hands each snapshot to the event loop; the
controller keeps one :class:`RoiStatus` per stream, which the streams API and the metrics
read. Both are immutable: a new state is a new object, so a reader never sees half an update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The push URL's query parameter naming the ROI template (``?roirecognition=roiface1``).
TEMPLATE_QUERY = "roirecognition"

NO_TEMPLATE = f"no {TEMPLATE_QUERY} template in the push URL"
WAITING = "waiting for the ROI stage"


def template_name(query: Mapping[str, str]) -> str | None:
    """The template a push asks for, or None."""
    return query.get(TEMPLATE_QUERY) or None


@dataclass(frozen=True, slots=True)
class RoiStats:
    """One snapshot of what the transcoder measured, taken on its worker thread."""

    regions: int = 0  # regions in the last encoded frame
    detect_ms: float = 0.0  # the last detection pass
    detect_every: int = 0  # frames between detection passes (0: no model runs)
    encode_ms: float = 0.0  # the last frame's encode
    lag_ms: float = 0.0  # behind ingest
    degraded: str | None = None  # which degradation step is in force, in words
    # The decoder and encoder the stage opened, and why not the GPU ones asked for (NVDEC
    # for ROI_RELAY_DECODER=cuda; NVENC for h264_nvenc/hevc_nvenc or auto).
    decoder: str | None = None
    decoder_fallback: str | None = None
    encoder: str | None = None
    encoder_fallback: str | None = None
    providers: tuple[str, ...] | None = None  # the recognition model's onnxruntime providers
    corrupt_gops: int = 0  # GOPs relayed plain because a frame in them did not decode


@dataclass(frozen=True, slots=True)
class RoiStatus:
    """The ROI stage's account of one stream."""

    template: str | None = None
    model: str | None = None
    applied: bool = False  # ROI-encoded frames are going out
    reason: str = NO_TEMPLATE
    stats: RoiStats = field(default_factory=RoiStats)


def initial_status(query: Mapping[str, str]) -> RoiStatus:
    """A stream's status before the ROI stage has looked at it."""
    name = template_name(query)
    return RoiStatus(template=name, reason=WAITING if name else NO_TEMPLATE)


__all__ = [
    "NO_TEMPLATE",
    "TEMPLATE_QUERY",
    "RoiStats",
    "RoiStatus",
    "initial_status",
    "template_name",
]
