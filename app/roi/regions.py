"""The ROI string rules, in one place.

String form ``Top,Left-Bottom,Right=DeltaQp`` joined by ``;`` (reference/roi-video-encoding.txt).
One parser and one formatter serve the REST override, the detector output and the metadata
sent to players.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DELTA_QP = -3
MAX_REGIONS = 6
MAX_AREA_FRACTION = 1 / 5
MAX_STRING_BYTES = 256


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle in pixel coordinates, bottom/right exclusive, with its QP delta."""

    top: int
    left: int
    bottom: int
    right: int
    qp: int = DEFAULT_DELTA_QP
    label: str = ""
    score: float = 1.0

    @property
    def width(self) -> int:
        return max(0, self.right - self.left)

    @property
    def height(self) -> int:
        return max(0, self.bottom - self.top)

    @property
    def area(self) -> int:
        return self.width * self.height
