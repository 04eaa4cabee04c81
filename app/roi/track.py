"""From detections to encoder regions: padding, merging, ranking, tracking.

``RegionTracker.update`` is called once per video frame with the newest detections (or
``None`` on frames where no detection ran) and returns the regions for that frame, best
first. Between detections a region follows its track's motion; a track missed by a
detection pass is held for a few frames before it goes, so regions do not flicker.

Which regions go first is decided here (label priority from the model's manifest, then
prominence); the picture rules (at most 6 regions, 1/5 of the area, first wins) are enforced
by ``app.roi.regions.effective_regions``, the one place for them. The ranking here already
shrinks a region that would overflow the area budget, so the rule cuts as little as possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from app.roi.detect import (
    Detection,
    LabelPolicy,
    RankingPolicy,
    RecognitionModel,
    box_area,
    box_intersection,
    box_iou,
    prominence,
)
from app.roi.regions import MAX_REGIONS, MIN_DELTA_QP, Region, effective_regions, max_region_area

# FFmpeg's libx264 and libx265 wrappers apply ROI per 16x16 block (every block a region
# touches); regions are aligned to these blocks.
BLOCK = 16


def label_qp(delta_qp: int, policy: LabelPolicy) -> int:
    """The template's DeltaQp scaled by the label's weight, kept a quality *gain* (<= 0):
    a detected region is never coded worse than the rest of the picture."""
    return max(MIN_DELTA_QP, min(0, round(delta_qp * policy.qp_weight)))


def pad_box(box: np.ndarray, pad: float, width: int, height: int) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    out = box + np.array([-pad * w, -pad * h, pad * w, pad * h])
    return np.clip(out, 0, [width, height, width, height])


def merge_near(boxes: np.ndarray, scores: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Union boxes (one label) that overlap or lie within ``gap`` x the smaller box's size.

    Repeats until nothing more merges (a chain of words becomes one line). The loop runs over
    boxes, each step vectorised.
    """
    boxes = boxes.copy()
    scores = scores.copy()
    while len(boxes) > 1:
        size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        reach = gap * np.minimum(size[:, None], size[None, :])
        dx = np.maximum(
            boxes[None, :, 0] - boxes[:, None, 2], boxes[:, None, 0] - boxes[None, :, 2]
        )
        dy = np.maximum(
            boxes[None, :, 1] - boxes[:, None, 3], boxes[:, None, 1] - boxes[None, :, 3]
        )
        near = (dx <= reach) & (dy <= reach)
        np.fill_diagonal(near, False)
        pairs = np.argwhere(np.triu(near))
        if pairs.size == 0:
            break
        i, j = pairs[0]
        boxes[i] = [
            min(boxes[i, 0], boxes[j, 0]),
            min(boxes[i, 1], boxes[j, 1]),
            max(boxes[i, 2], boxes[j, 2]),
            max(boxes[i, 3], boxes[j, 3]),
        ]
        scores[i] = max(scores[i], scores[j])
        boxes = np.delete(boxes, j, axis=0)
        scores = np.delete(scores, j)
    return boxes, scores


def drop_nested(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop boxes lying 80 % or more inside a larger box."""
    inter = box_intersection(boxes, boxes)
    area = box_area(boxes)
    inside = (inter >= 0.8 * area[:, None]) & (area[None, :] > area[:, None])
    nested = inside.any(axis=1)
    return boxes[~nested], scores[~nested]


def prepare_detections(
    detections: list[Detection], ranking: RankingPolicy, width: int, height: int
) -> list[Detection]:
    """Pad, de-duplicate and merge detections per label, keeping each label's ``max_count``."""
    out: list[Detection] = []
    for label in dict.fromkeys(d.label for d in detections):
        policy = ranking.for_label(label)
        group = [d for d in detections if d.label == label]
        if policy.max_count:
            group.sort(key=lambda d: prominence(d, width, height), reverse=True)
            group = group[: policy.max_count]
        boxes = np.array(
            [pad_box(np.array(d.box, float), policy.pad, width, height) for d in group]
        )
        scores = np.array([d.score for d in group])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = boxes[keep], scores[keep]
        if len(boxes) > 1:
            # Two detectors (or two anchors) seeing the same object: keep the stronger.
            order = np.argsort(-scores)
            boxes, scores = boxes[order], scores[order]
            iou = box_iou(boxes, boxes)
            duplicate = np.triu(iou > 0.5, k=1).any(axis=0)
            boxes, scores = boxes[~duplicate], scores[~duplicate]
        if policy.drop_nested and len(boxes) > 1:
            boxes, scores = drop_nested(boxes, scores)
        if policy.merge_gap > 0:
            boxes, scores = merge_near(boxes, scores, policy.merge_gap)
        out.extend(
            Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), label, float(s))
            for b, s in zip(boxes, scores, strict=True)
        )
    return out


def _shrink_to(box: tuple[float, float, float, float], area: float) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    factor = math.sqrt(area / max((x1 - x0) * (y1 - y0), 1e-9))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _to_region(box: tuple[float, ...], qp: int, label: str, score: float, w: int, h: int) -> Region:
    """The blocks ``box`` touches, as a region: exactly what the encoder will boost."""
    x0, y0, x1, y1 = box
    return Region(
        top=max(0, math.floor(y0) // BLOCK * BLOCK),
        left=max(0, math.floor(x0) // BLOCK * BLOCK),
        bottom=min(h, -(-math.ceil(y1) // BLOCK) * BLOCK),
        right=min(w, -(-math.ceil(x1) // BLOCK) * BLOCK),
        qp=qp,
        label=label,
        score=round(float(score), 3),
    )


def fit_regions(
    ranked: list[Detection],
    ranking: RankingPolicy,
    delta_qp: int,
    width: int,
    height: int,
    max_regions: int = MAX_REGIONS,
) -> list[Region]:
    """Block-aligned regions from ranked boxes, within ``max_regions`` and 1/5 of the picture.

    Each box becomes the 16x16 blocks it touches. FFmpeg's x264/x265 wrappers boost every
    block a region touches, so an unaligned region would be boosted over a larger area than
    it states (up to 15 pixels more on each side), and the 1/5 rule would hold only on paper.
    Aligned, the region that players get, the area the rule counts and the blocks the encoder
    boosts are the same pixels.

    Walks the boxes best first, accumulating area as the rule does. A box that would overflow
    the budget is shrunk around its centre until its blocks fit what is left (when its label
    allows and at least one block is left); otherwise it is skipped and later, smaller boxes
    may still fit.
    """
    budget = max_region_area(width, height)
    limit = min(max_regions, MAX_REGIONS)
    used = 0
    regions: list[Region] = []
    for d in ranked:
        if len(regions) >= limit:
            break
        policy = ranking.for_label(d.label)
        qp = label_qp(delta_qp, policy)
        region = _to_region(d.box, qp, d.label, d.score, width, height)
        if region.area == 0:
            continue
        if used + region.area > budget:
            shrunk = _shrunk_to_fit(d, qp, budget - used, width, height) if policy.shrink else None
            if shrunk is None:
                continue
            region = shrunk
        if any(_contains(r, region) for r in regions):
            continue  # the earlier region wins every pixel of it: it would only use budget
        regions.append(region)
        used += region.area
    return regions


def _contains(outer: Region, inner: Region) -> bool:
    return (
        outer.left <= inner.left
        and outer.top <= inner.top
        and outer.right >= inner.right
        and outer.bottom >= inner.bottom
    )


def _shrunk_to_fit(d: Detection, qp: int, room: int, width: int, height: int) -> Region | None:
    """The largest centred shrink of ``d.box`` whose blocks fit in ``room`` pixels."""
    if room < BLOCK * BLOCK:
        return None
    target = float(room)
    for _ in range(24):  # each step 10 % less area; 24 steps reach under a tenth
        region = _to_region(_shrink_to(d.box, target), qp, d.label, d.score, width, height)
        if 0 < region.area <= room:
            return region
        target *= 0.9
    return None


@dataclass
class _Track:
    ident: int
    label: str
    box: np.ndarray  # smoothed x0, y0, x1, y1
    score: float
    last_seen: int  # frame number of the last detection that matched
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    misses: int = 0  # detection passes in a row that did not see it
    shown: np.ndarray | None = None  # the box the regions were last made from

    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2

    def size(self) -> float:
        """The box's longer side (at least 1 pixel)."""
        return float(max(1.0, *(self.box[2:] - self.box[:2])))

    def shown_box(self, deadband: float) -> np.ndarray:
        """The box to make regions from: it follows ``box`` once an edge has moved more than
        ``deadband`` x the box size, so jitter does not flip the region between blocks."""
        if (
            self.shown is None
            or float(np.abs(self.box - self.shown).max()) > deadband * self.size()
        ):
            self.shown = self.box.copy()
        return self.shown


class RegionTracker:
    """Detections in, stable ranked regions out, one call per frame.

    ``ranking``: a ``RecognitionModel`` (its manifest's ranking) or a ``RankingPolicy``.
    ``smoothing``: weight of the track's predicted box against a new detection (0 = jump).
    A track missed by a detection pass is held: it goes only once it has been missed by more
    than ``max_misses`` passes in a row *and* not seen for more than ``hold_frames`` frames.
    So one missed pass never drops a region, whether detection runs every frame or every N.
    ``max_age_frames`` bounds the hold when detection stops altogether (``None`` calls only).
    ``deadband``: a region moves once its track's box has moved this fraction of its size;
    regions are whole 16x16 blocks, and a box jittering across a block edge would otherwise
    switch the encoder's boost on and off there from frame to frame.
    ``settled_error``: see ``settled``.
    """

    def __init__(
        self,
        ranking: RankingPolicy | RecognitionModel,
        delta_qp: int = -6,
        max_regions: int = MAX_REGIONS,
        *,
        smoothing: float = 0.4,
        hold_frames: int = 8,
        max_misses: int = 1,
        max_age_frames: int = 150,
        match_iou: float = 0.2,
        settled_error: float = 0.08,
        deadband: float = 0.06,
    ) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self.ranking = ranking.ranking if isinstance(ranking, RecognitionModel) else ranking
        self.delta_qp = delta_qp
        self.max_regions = max_regions
        self.smoothing = smoothing
        self.hold_frames = hold_frames
        self.max_misses = max_misses
        self.max_age_frames = max_age_frames
        self.match_iou = match_iou
        self.settled_error = settled_error
        self.deadband = deadband
        # Whether the last detection pass only confirmed what the tracks predicted: same
        # objects, each centre within ``settled_error`` x its size of the prediction.
        self.settled = False
        self.frame = 0
        self.tracks: list[_Track] = []
        self._next_id = 1

    def _alive(self, track: _Track) -> bool:
        unseen = self.frame - track.last_seen
        if unseen > self.max_age_frames:
            return False
        return track.misses <= self.max_misses or unseen <= self.hold_frames

    def update(self, detections: list[Detection] | None, width: int, height: int) -> list[Region]:
        self.frame += 1
        self._predict()
        if detections is not None:
            self._correct(prepare_detections(detections, self.ranking, width, height))
        self.tracks = [t for t in self.tracks if self._alive(t)]
        return self.regions(width, height)

    def regions(self, width: int, height: int) -> list[Region]:
        live = []
        for t in self.tracks:
            shown = t.shown_box(self.deadband)
            x0, y0, x1, y1 = np.clip(shown, 0, [width, height, width, height])
            if x1 > x0 and y1 > y0:
                live.append(
                    Detection((float(x0), float(y0), float(x1), float(y1)), t.label, t.score)
                )
        ranked = self.rank(live, width, height)
        fitted = fit_regions(ranked, self.ranking, self.delta_qp, width, height, self.max_regions)
        return effective_regions(fitted, width, height, self.max_regions)

    def rank(self, boxes: list[Detection], width: int, height: int) -> list[Detection]:
        """Label priority first, then prominence; each label keeps at most its max_count."""
        ordered = sorted(
            boxes,
            key=lambda d: (self.ranking.for_label(d.label).priority, -prominence(d, width, height)),
        )
        counts: dict[str, int] = {}
        out = []
        for d in ordered:
            cap = self.ranking.for_label(d.label).max_count
            counts[d.label] = counts.get(d.label, 0) + 1
            if not cap or counts[d.label] <= cap:
                out.append(d)
        return out

    def _predict(self) -> None:
        for t in self.tracks:
            t.box = t.box + np.tile(t.velocity, 2)
            t.velocity = t.velocity * 0.9  # coast to a stop rather than fly off

    def _correct(self, detections: list[Detection]) -> None:
        for t in self.tracks:
            t.misses += 1  # reset by _absorb for the tracks this pass sees
        unmatched = list(range(len(detections)))
        worst_error = 0.0
        if self.tracks and detections:
            det_boxes = np.array([d.box for d in detections])
            track_boxes = np.array([t.box for t in self.tracks])
            iou = box_iou(track_boxes, det_boxes)
            same = np.array([[t.label == d.label for d in detections] for t in self.tracks])
            # Centroid distance in units of the track's size: catches fast, small objects
            # (a ball) whose boxes no longer overlap between detection passes.
            t_c = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2
            d_c = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2
            t_size = np.maximum(track_boxes[:, 2:] - track_boxes[:, :2], 1).max(axis=1)
            dist = np.linalg.norm(t_c[:, None] - d_c[None], axis=2) / t_size[:, None]
            score = np.where(same & (iou >= self.match_iou), 1.0 + iou, 0.0)
            score = np.where(same & (score == 0) & (dist < 1.5), 1.0 - dist / 1.5, score)
            while score.size and score.max() > 0:
                ti, di = np.unravel_index(int(np.argmax(score)), score.shape)
                worst_error = max(worst_error, self._absorb(self.tracks[ti], detections[di]))
                score[ti, :] = 0
                score[:, di] = 0
                unmatched.remove(int(di))
        self.settled = (
            bool(self.tracks)
            and not unmatched
            and all(t.misses == 0 for t in self.tracks)
            and worst_error <= self.settled_error
        )
        for index in unmatched:
            d = detections[index]
            self.tracks.append(
                _Track(self._next_id, d.label, np.array(d.box, float), d.score, self.frame)
            )
            self._next_id += 1

    def _absorb(self, track: _Track, d: Detection) -> float:
        """Folds a matched detection into its track; returns the prediction's error (centre
        distance over the track's size)."""
        new_box = np.array(d.box, float)
        frames = max(1, self.frame - track.last_seen)
        # The box was already moved by the predicted velocity; what is left of the error is
        # motion the prediction missed, spread over the frames since the last match.
        innovation = (new_box[:2] + new_box[2:]) / 2 - track.centre()
        error = float(np.linalg.norm(innovation)) / track.size()
        track.velocity = track.velocity + 0.5 * innovation / frames
        track.box = self.smoothing * track.box + (1 - self.smoothing) * new_box
        track.score = 0.5 * track.score + 0.5 * d.score
        track.last_seen = self.frame
        track.hits += 1
        track.misses = 0
        return error
