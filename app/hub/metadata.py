"""What a publisher's onMetaData may say: non-finite and out-of-range numbers are dropped where
metadata enters the hub."""

from __future__ import annotations

import math
from typing import Any

# onMetaData values a publisher may declare; one outside its range is dropped, as is any
# non-finite number (AMF0 numbers are doubles: Infinity and NaN arrive as they are).
METADATA_RANGES: dict[str, tuple[float, float]] = {
    "width": (1, 65535),
    "height": (1, 65535),
    "framerate": (0.001, 1000),
    "fps": (0.001, 1000),
    "videodatarate": (0, 1_000_000),  # kbit/s
    "audiodatarate": (0, 1_000_000),
    "audiosamplerate": (1, 768_000),
    "audiosamplesize": (1, 64),
    "duration": (0, 1e9),
    "filesize": (0, 1e15),
}


def sanitized_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The publisher's metadata without non-finite numbers (at any depth) and without the
    known fields whose value is out of :data:`METADATA_RANGES`: what enters the hub is what
    every reader (stream info, the ROI stage's rate and bitrate) may take at its word."""
    clean: dict[str, Any] = {}
    for name, value in metadata.items():
        value = _finite(value)
        if value is _DROP:
            continue
        bounds = METADATA_RANGES.get(name)
        if bounds is not None and _is_number(value) and not bounds[0] <= value <= bounds[1]:
            continue
        clean[name] = value
    return clean


_DROP = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, dict):
        return {k: v for k, v in ((k, _finite(v)) for k, v in value.items()) if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in (_finite(v) for v in value) if v is not _DROP]
    return value
