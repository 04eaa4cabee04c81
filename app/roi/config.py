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


__all__ = ["RoiConfig"]
