"""How a model's labels compete for the encoder's regions: the ``[label.<name>]`` tables.

The policy is read here from the manifest and applied by ``app.roi.track``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.roi.detect.base import ManifestTable
from app.roi.registry import ModelError


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


def parse_ranking(table: Any, where: str) -> RankingPolicy:
    if not isinstance(table, dict):
        raise ModelError(f"{where}: [label] must be a table of label policies")
    labels = {}
    for label, sub in table.items():
        opts = ManifestTable(sub, f"{where} label.{label}")
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
