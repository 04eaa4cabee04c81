"""The ROI string rules, in one place (docs/roi-rules.md states them and their source).

String form ``Top,Left-Bottom,Right=DeltaQp`` joined by ``;``.
One parser and one formatter serve the REST override, the detector output and the metadata
sent to players.

How each rule of the reference is read here:

* All parameters are integers (an optional sign is accepted; negative coordinates are clamped
  to the picture like any other out-of-picture coordinate).
* ``Top,Left`` is the top-left corner and ``Bottom,Right`` the bottom-right corner, exclusive,
  as in the reference's own example (``right = width + left``).
* ``=DeltaQp`` omitted means -3. A DeltaQp outside [-51, 51] makes *that region* invalid: the
  reference gives [-51, 51] as the valid range, and an invalid part of the string is skipped
  like any other malformed part rather than silently changed into a different request.
* Malformed parts are skipped; the rest of the string still counts. A string from which no
  valid region comes (``Clear``, ``;``, ``""``) means normal encoding. The REST API is
  stricter with what an application sends (:func:`check_roi_request`): a string with no valid
  region must say so explicitly (every part empty or ``Clear``), so a typo is an error and not
  a silent switch to normal encoding. What reaches the encoder follows the tolerant rule.
* Regions are clamped to the picture; one left with no area is invalid.
* At most 6 regions (or a template's smaller ``max_regions``): the first valid ones are kept,
  extra ones are ignored in order. Invalid regions do not use up a slot.
* Total area at most 1/5 of the picture, accumulated in order over the kept regions
  (overlaps counted twice, as the areas are simply added): a region takes effect only when
  the accumulated area up to and including it is within the limit. Since areas only add up,
  the first region that overflows ends the list: later regions, even smaller ones, are out
  too ("only the ROI regions whose accumulated area is within the limit will take effect").
* Overlap: the first region wins. The order of the list is kept everywhere, and the encoder
  (app/roi/encode.py) hands the list to FFmpeg in this order, whose x264/x265/QSV wrappers
  apply it last-to-first so that the first region ends up on top.
* A frame without ROI (``None``) reuses the previous frame's regions (:class:`RoiState`),
  which are an empty list when the previous frame was encoded normally.
* Input longer than 256 bytes (UTF-8) is truncated before parsing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

DEFAULT_DELTA_QP = -3
MIN_DELTA_QP = -51
MAX_DELTA_QP = 51
MAX_REGIONS = 6
MAX_STRING_BYTES = 256
_AREA_LIMIT_DIVISOR = 5  # regions may cover at most 1/5 of the picture together

_INT = r"\s*([+-]?\d+)\s*"
_REGION_RE = re.compile(rf"^{_INT},{_INT}-{_INT},{_INT}(?:={_INT})?$", re.ASCII)


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


def truncate_roi_text(text: str) -> str:
    """Cuts ``text`` to at most 256 UTF-8 bytes, dropping a character split by the cut (and
    any lone surrogate, which no UTF-8 text can hold)."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= MAX_STRING_BYTES:
        return text
    return raw[:MAX_STRING_BYTES].decode("utf-8", errors="ignore")


def parse_region(part: str) -> Region | None:
    """One ``Top,Left-Bottom,Right[=DeltaQp]`` part, or None when malformed or DeltaQp is
    out of range. Coordinates are not checked against any picture here."""
    match = _REGION_RE.match(part)
    if match is None:
        return None
    top, left, bottom, right, qp_text = match.groups()
    qp = DEFAULT_DELTA_QP if qp_text is None else int(qp_text)
    if not MIN_DELTA_QP <= qp <= MAX_DELTA_QP:
        return None
    return Region(int(top), int(left), int(bottom), int(right), qp)


def parse_roi(text: str) -> list[Region]:
    """Parses an ROI string (syntax only, tolerant): the well-formed regions in order.

    The text is truncated to 256 bytes first; malformed parts are skipped. An empty result
    means normal encoding. Picture rules (clamping, count, area) are
    :func:`effective_regions`'s job.
    """
    regions = []
    for part in truncate_roi_text(text).split(";"):
        region = parse_region(part)
        if region is not None:
            regions.append(region)
    return regions


ROI_REQUEST_RULE = (
    "no valid region: each region is Top,Left-Bottom,Right[=DeltaQp] (integers, bottom > top, "
    f"right > left, DeltaQp from {MIN_DELTA_QP} to {MAX_DELTA_QP}), regions joined by ';'; "
    "send 'Clear' (or ';' or '') for normal encoding"
)


def is_explicit_clear(text: str) -> bool:
    """Whether ``text`` asks for normal encoding in so many words: every part (split at
    ``;``) is empty or ``Clear`` (any case)."""
    return all(part.strip().lower() in ("", "clear") for part in text.split(";"))


def check_roi_request(text: str) -> list[Region]:
    """The regions of an ROI string an application sent, or ValueError with
    ``ROI_REQUEST_RULE`` when it has no valid region and is not an explicit clear.

    A region whose rectangle is empty is invalid on any picture, so it does not count.
    """
    regions = parse_roi(text)
    if not any(r.area > 0 for r in regions) and not is_explicit_clear(truncate_roi_text(text)):
        raise ValueError(ROI_REQUEST_RULE)
    return regions


def clamp_region(region: Region, width: int, height: int) -> Region:
    """The part of ``region`` inside a ``width`` x ``height`` picture (may have no area)."""
    top = min(max(region.top, 0), height)
    bottom = min(max(region.bottom, 0), height)
    left = min(max(region.left, 0), width)
    right = min(max(region.right, 0), width)
    if (top, bottom, left, right) == (region.top, region.bottom, region.left, region.right):
        return region
    return replace(region, top=top, left=left, bottom=bottom, right=right)


def max_region_area(width: int, height: int) -> int:
    """The most pixels the regions of one ``width`` x ``height`` picture may cover together."""
    return width * height // _AREA_LIMIT_DIVISOR


def effective_regions(
    regions: Iterable[Region], width: int, height: int, max_regions: int = MAX_REGIONS
) -> list[Region]:
    """The regions that take effect on a ``width`` x ``height`` picture, in order.

    Clamps to the picture, drops regions with no area or a DeltaQp out of range, keeps at
    most ``max_regions`` (capped at 6) and stops at the first region whose accumulated area
    would exceed 1/5 of the picture. Idempotent: applying it twice changes nothing.
    """
    if width <= 0 or height <= 0:
        return []
    limit = min(max_regions, MAX_REGIONS)
    max_area = max_region_area(width, height)
    kept: list[Region] = []
    accumulated = 0
    for region in regions:
        if len(kept) >= limit:
            break
        if not MIN_DELTA_QP <= region.qp <= MAX_DELTA_QP:
            continue
        clamped = clamp_region(region, width, height)
        if clamped.area == 0:
            continue
        accumulated += clamped.area
        if accumulated > max_area:
            break
        kept.append(clamped)
    return kept


def with_delta_qp(regions: Iterable[Region], qp: int) -> list[Region]:
    """The same rectangles with one QP delta (a template's ``delta_qp``)."""
    return [replace(region, qp=qp) for region in regions]


def format_roi(regions: Iterable[Region]) -> str:
    """The ROI string of ``regions``, DeltaQp always written: ``80,560-300,760=-6;...``."""
    return ";".join(f"{r.top},{r.left}-{r.bottom},{r.right}={r.qp}" for r in regions)


class RoiState:
    """The regions in force for one stream, frame after frame.

    ``update(None)`` (no ROI given for this frame) keeps the previous frame's regions;
    ``update([])`` (a string with no valid region, such as ``Clear``) switches to normal
    encoding, which later ``None`` frames then keep.
    """

    __slots__ = ("_regions",)

    def __init__(self) -> None:
        self._regions: list[Region] = []

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    def update(self, regions: Sequence[Region] | None) -> list[Region]:
        if regions is not None:
            self._regions = list(regions)
        return list(self._regions)

    def update_text(self, text: str | None) -> list[Region]:
        """``update`` from an ROI string; None means "no ROI for this frame"."""
        return self.update(None if text is None else parse_roi(text))


@dataclass(frozen=True, slots=True)
class RoiMetadata:
    """The per-frame ROI metadata sent to players (SEI and WebSocket feed)."""

    pts: int
    width: int
    height: int
    template: str
    model: str
    regions: tuple[Region, ...]

    @property
    def roi(self) -> str:
        return format_roi(self.regions)


def roi_json(
    pts_ms: int,
    width: int,
    height: int,
    template: str,
    model: str,
    regions: Iterable[Region],
) -> str:
    """The compact per-frame JSON of docs/roi-rules.md (score rounded to 2 decimals)."""
    region_list = list(regions)
    document = {
        "pts": pts_ms,
        "w": width,
        "h": height,
        "template": template,
        "model": model,
        "roi": format_roi(region_list),
        "regions": [
            {
                "top": r.top,
                "left": r.left,
                "bottom": r.bottom,
                "right": r.right,
                "qp": r.qp,
                "label": r.label,
                "score": round(r.score, 2),
            }
            for r in region_list
        ],
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class RoiJsonError(ValueError):
    """ROI metadata JSON that does not have the shape of :func:`roi_json`'s output."""


def _int_field(obj: dict[str, object], name: str) -> int:
    value = obj.get(name)
    # bool is an int subclass; a JSON true/false is never a valid number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RoiJsonError(f"field {name!r} must be an integer")
    return value


def _str_field(obj: dict[str, object], name: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise RoiJsonError(f"field {name!r} must be a string")
    return value


def _region_from_json(item: object) -> Region:
    if not isinstance(item, dict):
        raise RoiJsonError("not an object")
    score = item.get("score", 1.0)
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise RoiJsonError("field 'score' must be a number")
    return Region(
        top=_int_field(item, "top"),
        left=_int_field(item, "left"),
        bottom=_int_field(item, "bottom"),
        right=_int_field(item, "right"),
        qp=_int_field(item, "qp"),
        label=_str_field(item, "label", ""),
        score=float(score),
    )


def parse_roi_json(text: str | bytes) -> RoiMetadata:
    """Reads :func:`roi_json`'s output back; raises RoiJsonError naming the bad field."""
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RoiJsonError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RoiJsonError("not a JSON object")
    raw_regions = obj.get("regions")
    if not isinstance(raw_regions, list):
        raise RoiJsonError("field 'regions' must be a list")
    regions = []
    for index, item in enumerate(raw_regions):
        try:
            regions.append(_region_from_json(item))
        except RoiJsonError as exc:
            raise RoiJsonError(f"regions[{index}]: {exc}") from exc
    return RoiMetadata(
        pts=_int_field(obj, "pts"),
        width=_int_field(obj, "w"),
        height=_int_field(obj, "h"),
        template=_str_field(obj, "template"),
        model=_str_field(obj, "model"),
        regions=tuple(regions),
    )
