"""What the ROI stage is told to do for one stream (from a template version or REST regions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.templates.rules import TemplateSettings


@dataclass(frozen=True, slots=True)
class RoiConfig:
    """The transcoder's settings: the template in force (the one shape of a template's settings,
    app/templates/rules.py) and whether its recognition model runs."""

    template: str | None
    settings: TemplateSettings = field(default_factory=TemplateSettings)
    # False when the application supplies the regions (REST): no recognition model runs.
    detect: bool = True

    @property
    def model(self) -> str | None:
        """The recognition model to run, or None when regions come only from the application."""
        return self.settings.model if self.detect else None


@dataclass(frozen=True, slots=True)
class PictureLimit:
    """The largest picture the ROI stage decodes (decoding allocates frames of that size,
    several times over: an SPS declaring 16000x8000 cost 4.4 GB). The default is H.264
    level 5.1's frame size, 4096x2304; larger streams are relayed plain."""

    pixels: int = 36864 * 256
    side: int = 8192

    def refuses(self, width: int, height: int) -> bool:
        return width * height > self.pixels or max(width, height) > self.side


__all__ = ["PictureLimit", "RoiConfig"]
