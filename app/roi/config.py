"""What the ROI stage is told to do for one stream (from a template version or REST regions)."""

from __future__ import annotations

from dataclasses import dataclass

from app.roi.regions import MAX_REGIONS


@dataclass(frozen=True, slots=True)
class RoiConfig:
    """The transcoder's settings; the controller derives them from the template in force."""

    template: str | None
    model: str | None  # None: no recognition model, regions come only from the application
    delta_qp: int = -6
    max_regions: int = MAX_REGIONS
    bitrate_kbps: int | None = None


__all__ = ["RoiConfig"]
